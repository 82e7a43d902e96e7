import sys

from .app import run
from .config import parse_config

sys.exit(run(parse_config()))
