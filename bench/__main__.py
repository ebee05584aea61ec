import importlib
import pkgutil
import sys
from pathlib import Path

names = sys.argv[1:] or sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent))
                               if not m.name.startswith("_"))
if not names:
    print("no benchmarks yet")
for name in names:
    module = importlib.import_module(f"bench.{name}")
    print(f"\n## {name}\n")
    module.main()
