"""The coding agents as people run them, against a real `yardmaster serve` on the quickstart
(mock providers): Claude Code from its npm package (tests/e2e/node), with only its base URL and a
key set and its telemetry and non-essential traffic off, so that nothing leaves 127.0.0.1."""

import os
import subprocess
import tempfile

from gateway import ROOT, Gateway

CLAUDE = ROOT / "tests" / "e2e" / "node" / "node_modules" / ".bin" / "claude"


def quickstart():
    config = (ROOT / "examples" / "quickstart.yaml").read_text().replace("policy: ../rules/main.route", "policy: main.route")
    return Gateway(config, (ROOT / "rules" / "main.route").read_text(), {})


def test_claude_code_says_hello_through_the_quickstart_with_no_flags():
    g = quickstart()
    try:
        home = tempfile.mkdtemp()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "ANTHROPIC_BASE_URL": g.url,
            "ANTHROPIC_API_KEY": "sk-e2e-claude-code",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_BUG_COMMAND": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        r = subprocess.run(
            [str(CLAUDE), "-p", "say hello"], cwd=home, env=env, capture_output=True, text=True, timeout=180
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "This is a mock reply from Yardmaster" in r.stdout, r.stdout
        log = g.log.read_text()
        # It came through the Messages door, asking for Claude names the quickstart routes.
        assert "door=messages" in log and "rule=claude" in log, log[-2000:]
        assert "status=200" in log
        assert "status=4" not in log, log[-2000:]
    finally:
        g.stop()
