import importlib
import pkgutil
import sys
from pathlib import Path

# `python -m bench NAME --flag`: names select modules, flags stay in sys.argv for them to read.
names = [arg for arg in sys.argv[1:] if not arg.startswith("-")] or sorted(
    m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
if not names:
    print("no benchmarks yet")
for name in names:
    module = importlib.import_module(f"bench.{name}")
    print(f"\n## {name}\n")
    module.main()
