"""Customer-service TTS load test: users, a selectable load shape and SLO gates.

Run headless against a running service (see the Makefile targets ``loadtest``, ``loadtest-spike``, ``soak``)::

    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:8000 -u 4 -r 2 -t 60s \
        --shape steady --csv loadtests/reports/steady --html loadtests/reports/steady.html

The process exits 0 when every SLO holds and ``loadtests.slo.EXIT_SLO_MISSED`` (3) when one is missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `locust -f` from any directory

from locust import events

from loadtests import shapes, slo
from loadtests.shapes import SelectedShape  # noqa: F401  (locust picks up the shape class)
from loadtests.users import IvrCallerUser, NoticeUser, WebChatUser  # noqa: F401


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    shapes.add_arguments(parser)
    slo.add_arguments(parser)


@events.quitting.add_listener
def _slo_gate(environment, **_kwargs) -> None:
    """Print the summary and set the exit code from the SLO verdict."""
    cfg = slo.config_from_options(environment.parsed_options)
    checks = slo.evaluate(environment.stats, cfg)
    print(slo.format_summary(environment.stats, checks), flush=True)
    environment.process_exit_code = 0 if all(c.ok for c in checks) else slo.EXIT_SLO_MISSED
