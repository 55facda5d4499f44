"""`python -m odkit ...` (also what `torchrun -m odkit train ...` runs)."""

from odkit.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
