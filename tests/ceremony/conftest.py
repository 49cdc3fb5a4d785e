"""The ceremony suite drives `keyhold ceremony` (the CLI) against real `keyhold serve --dev
--master-key ceremony` processes; it reuses the API suite's server helpers."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
