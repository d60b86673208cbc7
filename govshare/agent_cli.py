"""``govshare agent init | datasets | pull``: a subscriber's agent over its own home.

GOVSHARE_AGENT_HOME (default ./var-agent under the project root) holds the agent's keys, the
pinned publisher key and CA, and its mirror of the versions it read; it is refused inside
GOVSHARE_HOME (or holding it), so that an agent never sits beside the bureau's keys.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from agent.home import AgentHome
from common.catalog import PROJECT_ROOT
from common.errors import ConfigError
from common.files import check_output_target, inside, private_dir
from sharing.pull import check_purpose

AGENT_HOME_ENV = "GOVSHARE_AGENT_HOME"
LIST_PURPOSE = "查看本机构的共享授权 (list this agent's grants)"


def agent_home() -> AgentHome:
    from common.home import home

    raw = os.environ.get(AGENT_HOME_ENV)
    root = (Path(raw).expanduser() if raw else PROJECT_ROOT / "var-agent").resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{AGENT_HOME_ENV} {root} is not a folder")
    publisher = home().root
    if inside(root, publisher) or inside(publisher, root):
        raise ConfigError(f"{AGENT_HOME_ENV} {root} overlaps GOVSHARE_HOME {publisher}: an agent keeps its own keys "
                          "apart from the bureau's; point GOVSHARE_AGENT_HOME at another folder")
    return AgentHome(root)


def init(args: argparse.Namespace) -> int:
    from agent.ops import init_agent
    from keys.agentproto import parse_enrolment

    home = agent_home()
    path: Path = args.enrollment
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--enrollment {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--enrollment {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    enrolment = parse_enrolment(text, f"--enrollment {path}")
    private_dir(home.root)
    enrolled = init_agent(home, enrolment)
    print(f"agent {enrolled.agent_id} of {enrolled.subscriber} enrolled with {enrolled.service_url}; publisher key "
          f"{enrolled.publisher.key_id} and the service's CA pinned; keys in {home.root / 'keys'} "
          "(the enrolment file is used up and may be deleted)")
    return 0


def datasets(args: argparse.Namespace) -> int:
    from agent.ops import list_datasets

    enrolled = agent_home().load()
    items = list_datasets(enrolled, LIST_PURPOSE)
    if args.json:
        print(json.dumps(items, ensure_ascii=False, indent=2))
        return 0
    print(f"{enrolled.subscriber} (agent {enrolled.agent_id}): {len(items)} grant(s)")
    for item in items:
        state = "in force" if item.get("in_force") else f"NOT in force: {item.get('reason')}"
        latest = item.get("latest_version")
        print(f"  {item.get('dataset')}: {', '.join(item.get('fields') or [])}"
              f"{' (conditional: ' + ', '.join(item['conditional']) + ')' if item.get('conditional') else ''}; "
              f"{state}; latest version {latest if latest is not None else 'none yet'}")
    return 0


def pull(args: argparse.Namespace) -> int:
    from agent.ops import pull as agent_pull

    purpose = check_purpose(args.purpose)
    case = (args.case or "").strip()
    if len(case) > 100:
        raise ConfigError(f"--case is {len(case)} characters long; at most 100 are allowed")
    home = agent_home()
    enrolled = home.load()
    out = _checked_out(args.out, home)
    result = agent_pull(home, enrolled, args.dataset, purpose, case, out, version=args.version, since=args.since)
    if result.delivery is None:
        print(f"{result.dataset}: the target is at version {result.version} already; nothing new")
        return 0
    scope = (f"changes after version {result.since} up to {result.version}" if result.since is not None
             else f"version {result.version}")
    print(f"{result.dataset} {scope} for {result.subscriber}: {result.rows} rows ({result.deletes} deletes), "
          f"{len(result.fields)} fields -> {result.out} (verified against the pinned publisher key; the publisher's "
          f"access log record {result.delivery})")
    return 0


def _checked_out(raw: str, home: AgentHome) -> str:
    from common.home import home as publisher_home

    return check_output_target(raw, {"GOVSHARE_AGENT_HOME": home.root, "GOVSHARE_HOME": publisher_home().root,
                                     "the project's source tree": PROJECT_ROOT})
