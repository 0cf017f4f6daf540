"""The benchmarks' gateway setup, in one place (used by load.sh, stack.sh, ab.sh and ledger.sh).

    python3 bench/gateway_config.py policy FILE
        writes the 100-rule policy: keyword, regex, tier and token-count rules in turn (none of
        which match the benchmarks' request), then a default, all routing to `fast`
    python3 bench/gateway_config.py config DIR LISTEN UPSTREAM [on|off]
        writes DIR/policy.route and DIR/yardmaster.yaml: the gateway on LISTEN, one OpenAI-compatible
        provider at http://UPSTREAM/v1 serving `fast`, and the ledger on (default) or off
"""
import os
import sys


def policy() -> str:
    rules = []
    for i in range(100):
        cond = [
            f'prompt contains any ["kw{i}alpha", "kw{i}beta", "kw{i} gamma"]',
            f"prompt matches /err{i}-[0-9]+/",
            f'user.tier == "tier{i}"',
            f"prompt.tokens > {100 + i}k",
        ][i % 4]
        rules.append(f'rule "r{i}" {{\n  when {cond}\n  then fast\n}}\n')
    rules.append("default {\n  then fast\n}\n")
    return "\n".join(rules)


def config(listen: str, upstream: str, ledger: str) -> str:
    text = f"""
listen: {listen}
policy: policy.route
providers:
  up: {{ kind: openai, base_url: "http://{upstream}/v1" }}
models:
  fast: {{ provider: up, id: fast, price: {{ input: 1, output: 1 }}, context: 128000 }}
"""
    return text + ("storage: { ledger: false }\n" if ledger == "off" else "")


def main(args: list[str]) -> None:
    match args:
        case ["policy", path]:
            open(path, "w").write(policy())
        case ["config", folder, listen, upstream, *rest] if rest in ([], ["on"], ["off"]):
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, "policy.route"), "w").write(policy())
            open(os.path.join(folder, "yardmaster.yaml"), "w").write(config(listen, upstream, (rest or ["on"])[0]))
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
