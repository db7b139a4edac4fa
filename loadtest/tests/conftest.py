import os
import sys
from pathlib import Path

# The unit tests import Locust's modules but never generate load in this process; gevent's
# monkey-patching after pytest's plugins have imported ssl would break ssl (RecursionError).
# The CLI tests run Locust in subprocesses, with a clean environment (see test_cli.run_cli).
os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")

sys.path.insert(0, str(Path(__file__).parent))
