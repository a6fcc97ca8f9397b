#!/usr/bin/env python3
"""Static checks of the multi-container deployment in compose/ (no Docker needed).

    .dev/venv/bin/python compose/check.py --openapi openapi.json      # or --openapi - (stdin)
    .build/debug/control-plane openapi | .dev/venv/bin/python compose/check.py --openapi -

(a) docker-compose.yml parses and has the four services (the executables of Package.swift whose
    target is under Services/) plus postgres, redis, nats (>= 2.12), clickhouse and nginx; only
    nginx publishes ports; no container_name; depends_on waits for health checks that exist.
(b) every environment key of a service is one that service reads: string literals "SESSIONS_…"
    or "S2_…" in Services/<Dir>/ and Libraries/ServiceKit/ (a key read by an `extension
    Environment` accessor there counts only where the service calls the accessor). Every key it
    needs is set: those whose README default is 127.0.0.1/localhost/random, and
    SESSIONS_HTTP_PORT. URLs name compose services; the listen host is not loopback.
(c) every key set is documented in Services/<Dir>/README.md.
(d) every path of the OpenAPI document reaches, through the nginx template, the upstream of the
    service that serves it, unrewritten; unknown paths reach no service. nginx's location order
    is emulated: exact `=`, else the longest prefix (final if `^~`), else the first matching
    regex, else that prefix. Who serves a path: operation tags naming a service, else the
    longest group/route prefix that service's Hummingbird router registers, else the prefixes
    of the project README. Upstream addresses agree with the services' ports.
(e) the Dockerfile builds `--product $SERVICE` (a Package.swift product, per compose build args)
    on a swift: image, installs Package.swift's apt packages, copies every folder a target lives
    in, and runs as a non-root USER; .dockerignore and .env.example are complete.

Each problem is one line on stderr and the exit status is 1; otherwise one summary line.
"""
import argparse, json, re, sys, urllib.parse
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("check.py: error: needs PyYAML: .dev/venv/bin/python -m pip install pyyaml==6.0.3")

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ["postgres", "redis", "nats", "clickhouse", "nginx"]
LITERAL = re.compile(r'"((?:SESSIONS|S2)_[A-Z0-9_]+)"')
MENTION = re.compile(r"(?<![A-Z0-9_])((?:SESSIONS|S2)_[A-Z0-9_]+)")
FALLBACK_OWNERS = [(r"/api/openapi\.json$|/api/v1/sessions(/|$)", "control-plane"), (r"/realtime/", "realtime"),
                   (r"/api/v1/runs/[^/]+/session-streams/|/api/v1/waitpoints(/|$)", "waitpoints")]
UNKNOWN_PATHS = ["/", "/api", "/api/v1", "/api/v1/unknown", "/api/v1/sessionsX", "/api/v2/sessions",
                 "/api/v1/runs/run_1/other", "/metrics", "/healthz", "/readyz", "/realtime", "/.env"]
PACKAGE = (ROOT / "Package.swift").read_text()
PRODUCTS = dict(re.findall(r'\.executable\(name:\s*"([^"]+)",\s*targets:\s*\["([^"]+)"\]', PACKAGE))
SERVICES = {p: t for p, t in PRODUCTS.items() if (ROOT / "Services" / t).is_dir()}
problems = []


def swift_sources(folder):
    return "\n".join(f.read_text() for f in sorted((ROOT / folder).rglob("*.swift")))


def keys_read(target):  # (b): literals in the service, plus ServiceKit's common keys and used accessors
    source, keys = swift_sources(f"Services/{target}"), set()
    for file in sorted((ROOT / "Libraries/ServiceKit").rglob("*.swift")):
        text, spans = file.read_text(), []
        for m in re.finditer(r"\bextension\s+Environment\b[^{]*\{", text):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth, i = depth + {"{": 1, "}": -1}.get(text[i], 0), i + 1
            spans.append((m.end(), i))
        for m in LITERAL.finditer(text):
            inside = [re.findall(r"\b(?:var|func)\s+(\w+)", text[a:m.start()]) for a, b in spans if a <= m.start() < b]
            if not inside or not inside[0] or re.search(rf"\.{inside[0][-1]}\b", source):
                keys.add(m[1])
    return keys | set(LITERAL.findall(source))


def readme(target):  # (keys the README mentions, keys whose documented default is no use in a container)
    text, needed = (ROOT / "Services" / target / "README.md").read_text(), set()
    for line in text.splitlines():
        cells = line.strip().strip("|").split("|")
        if line.startswith("|") and len(cells) > 1 and re.search(r"127\.0\.0\.1|localhost|random", cells[1]):
            needed |= set(MENTION.findall(cells[0]))
    return set(MENTION.findall(text)), needed


def environment_of(service):
    env = service.get("environment") or {}
    return {k: str(v) for k, v in (dict((e.split("=", 1) + [""])[:2] for e in env) if isinstance(env, list)
                                   else env).items()}


def plain(value):  # a compose value with its ${...} interpolations replaced by a placeholder
    return re.sub(r"\$\{[^}]*\}", "x", value)


def check_compose(services, here):
    for name in [*SERVICES, *SERVERS]:
        if name not in services:
            problems.append(f"compose: service '{name}' is missing")
    for name, service in services.items():
        if service.get("ports") and name not in ("nginx", "prometheus"):
            problems.append(f"compose: {name} publishes ports {service['ports']}; only nginx may (replicas scale)")
        if "container_name" in service:
            problems.append(f"compose: {name} has a container_name; `--scale` needs none")
        depends = service.get("depends_on") or {}
        for dependency in depends:
            if not isinstance(depends, dict) or (depends[dependency] or {}).get("condition") != "service_healthy":
                problems.append(f"compose: {name} depends on {dependency} without condition: service_healthy")
            elif "healthcheck" not in (services.get(dependency) or {}):
                problems.append(f"compose: {name} waits for {dependency} to be healthy, which has no healthcheck")
    if "wal_level=logical" not in str((services.get("postgres") or {}).get("command")):
        problems.append("compose: postgres does not run with -c wal_level=logical")
    version = re.match(r"nats:(\d+)\.(\d+)", str((services.get("nats") or {}).get("image")))
    if not version or (int(version[1]), int(version[2])) < (2, 12):
        problems.append("compose: nats must be a nats:2.x image, x >= 12 (atomic batch publish)")
    ports = {}
    for product, target in SERVICES.items():
        service = services.get(product) or {}
        env, known = environment_of(service), keys_read(target)
        documented, no_use_default = readme(target)
        for key in sorted(set(env) - known):
            problems.append(f"compose: {product} sets {key}, which Services/{target} does not read")
        for key in sorted(((no_use_default & known) | {"SESSIONS_HTTP_PORT"}) - set(env)):
            problems.append(f"compose: {product} must set {key} (its default does not work in a container)")
        for key in sorted((set(env) & known) - documented):
            problems.append(f"compose: {product} sets {key}, which Services/{target}/README.md does not document")
        for key, value in env.items():
            if key == "SESSIONS_HTTP_HOST" and plain(value) not in ("0.0.0.0", "::", "[::]"):
                problems.append(f"compose: {product} listens on {value}: other containers cannot reach it")
            if key.endswith("_URL") and key != "SESSIONS_PUBLIC_URL":
                host = urllib.parse.urlsplit(plain(value)).hostname
                if host not in services:
                    problems.append(f"compose: {product} {key} points at '{host}', which is no compose service")
        ports[product] = port = env.get("SESSIONS_HTTP_PORT", "")
        probe = " ".join(map(str, (service.get("healthcheck") or {}).get("test", [])))
        if not re.search(rf"127\.0\.0\.1:{re.escape(port)}/(readyz|healthz)\b", probe):
            problems.append(f"compose: {product} healthcheck does not probe /readyz (or /healthz) on port {port}")
        build = service.get("build") or {}
        build = {"context": build} if isinstance(build, str) else build
        args = build.get("args") or {}
        if (here / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve() != here / "Dockerfile":
            problems.append(f"compose: {product} is not built from {here / 'Dockerfile'}")
        if args.get("SERVICE") != product or str(args.get("PORT")) != port:
            problems.append(f"compose: {product} builds SERVICE={args.get('SERVICE')} PORT={args.get('PORT')}, "
                            f"not SERVICE={product} PORT={port}")
        if not service.get("image"):
            problems.append(f"compose: {product} has no image: name")
    return ports


def check_dockerfile(compose, here):  # (e), plus the files next to it
    text = (here / "Dockerfile").read_text()
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines()]
    instructions = [((line.split(None, 1) + [""])[:2]) for line in lines if line and line[0] != "#"]
    instructions = [(word.upper(), rest) for word, rest in instructions]
    defaults = dict(re.findall(r"(?m)^ARG\s+(\w+)=(\S+)", text))
    stages = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    final = instructions[stages[-1]:] if stages else []
    if not any(re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m[1], ""), instructions[i][1]).startswith("swift:")
               for i in stages):
        problems.append("Dockerfile: no build stage FROM an official swift: image")
    if not re.search(r"swift build .*-c release .*--product \"?\$\{?SERVICE\b", " ".join(lines)):
        problems.append("Dockerfile: no `swift build -c release --product $SERVICE`")
    for arg in ("SERVICE", "PORT"):
        if not re.search(rf"(?m)^ARG\s+{arg}\b", text):
            problems.append(f"Dockerfile: build argument {arg} (passed by compose) is not declared")
    for apt in re.findall(r'apt:\s*"([^"]+)"', PACKAGE):
        if not re.search(rf"(?<![\w.-]){re.escape(apt)}(?![\w.-])", text):
            problems.append(f"Dockerfile: does not install {apt} (Package.swift's apt provider)")
    copied = " ".join(rest for word, rest in instructions if word == "COPY" and "--from" not in rest) + " "
    for folder in sorted(set(re.findall(r'path:\s*"([^"/\\]+)/', PACKAGE))):
        if not re.search(rf"(^|\s)(\./)?{folder}(/|\s)|(^|\s)\.\s", copied):
            problems.append(f"Dockerfile: does not COPY {folder}/ (Package.swift has targets there)")
    users = [rest.split(":")[0].strip() for word, rest in final if word == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("Dockerfile: the final stage does not switch to a non-root USER")
    for word in ("EXPOSE", "HEALTHCHECK"):
        if word not in (w for w, _ in final):
            problems.append(f"Dockerfile: the final stage has no {word}")
    ignore = (ROOT / ".dockerignore").read_text().split() if (ROOT / ".dockerignore").exists() else []
    for entry in sorted({".build", ".git", ".dev", "compose/.env"} - set(ignore)):
        problems.append(f".dockerignore: does not exclude {entry}")
    example = here / ".env.example"
    shown = set(re.findall(r"(?m)^(\w+)=", example.read_text())) if example.exists() else set()
    for name in sorted(set(re.findall(r"\$\{(\w+):?\?", json.dumps(compose, default=str))) - shown):
        problems.append(f"{example.name}: does not show the required variable {name}")


def nginx_parse(text):  # -> [(directive, [arguments], block or None)]
    tokens, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text[i] == "#":
            i = (text.find("\n", i) + 1) or len(text)
        elif text[i] in "{};":
            tokens.append((text[i], ""))
            i += 1
        elif text[i] in "\"'":
            j = i + 1
            while text[j] != text[i]:
                j += 2 if text[j] == "\\" else 1
            tokens.append(("w", text[i + 1:j]))
            i = j + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in "{};":
                j = text.index("}", j) + 1 if text.startswith("${", j) else j + 1  # ${PLACEHOLDER}
            tokens.append(("w", text[i:j]))
            i = j

    def block(i):
        items, words = [], []
        while i < len(tokens):
            kind, word = tokens[i]
            i += 1
            if kind == "w":
                words.append(word)
            elif kind == "}":
                break
            else:
                inner, i = block(i) if kind == "{" else (None, i)
                items.append((words[0] if words else "", words[1:], inner))
                words = []
        return items, i

    return block(0)[0]


def nginx_match(uri, locations):  # locations: [(modifier, pattern, block)] in file order
    exact = [loc for loc in locations if loc[0] == "=" and loc[1] == uri]
    prefixes = [loc for loc in locations if loc[0] in ("", "^~") and uri.startswith(loc[1])]
    longest = max(prefixes, key=lambda loc: len(loc[1]), default=None)
    if exact or (longest and longest[0] == "^~"):
        return (exact or [longest])[0]
    for modifier, pattern, body in locations:
        python = re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", pattern)  # PCRE named groups
        if modifier in ("~", "~*") and re.search(python, uri, re.IGNORECASE if modifier == "~*" else 0):
            return modifier, pattern, body
    return longest or ("", None, None)


def samples(path, parameters):  # concrete request paths as nginx matches them (decoded, merged slashes)
    uris = [path]
    for name in re.findall(r"\{(\w+)\}", path):
        spec = parameters.get(name, {})
        values = spec.get("schema", {}).get("enum") or [f"{name}_1"]
        values += [f"a%2F{name}%2Fb"] if "%2F" in spec.get("description", "") else []
        uris = [u.replace("{" + name + "}", v) for u in uris for v in values]
    return [re.sub("/+", "/", urllib.parse.unquote(u)) for u in uris]


def router_prefixes():  # [(prefix, service)]: the route groups and routes each service's router registers
    registration = r'(?:\.group|router\.(?:get|post|put|patch|head|delete|on))\(\s*"([^"{]+)"'
    return [("/" + prefix.strip("/"), product) for product, target in SERVICES.items()
            for prefix in re.findall(registration, swift_sources(f"Services/{target}"))]


def owner(path, operations, prefixes):
    tags = {t for op in operations for t in op.get("tags", [])} & set(SERVICES)
    if len(tags) == 1:
        return tags.pop()
    matching = sorted((len(p), product) for p, product in prefixes if path == p or path.startswith(p + "/"))
    fallback = [product for pattern, product in FALLBACK_OWNERS if re.match(pattern, path)]
    return matching[-1][1] if matching else (fallback or [None])[0]


def check_nginx(services, ports, here, document):  # (d)
    nginx = services.get("nginx") or {}
    env = environment_of(nginx)
    mounts = [[v.get("source", ""), v.get("target", "")] if isinstance(v, dict) else str(v).split(":")
              for v in nginx.get("volumes", [])]
    templates = [here / m[0] for m in mounts if len(m) > 1 and re.match(r"/etc/nginx/templates/.+\.template$", m[1])]
    if not templates:
        problems.append("compose: nginx mounts no template into /etc/nginx/templates/")
        return 0
    text = templates[0].read_text()
    for name in sorted(set(re.findall(r"\$\{(\w+)\}", re.sub(r"(?m)(^|\s)#.*$", "", text))) - set(env)):
        problems.append(f"compose: nginx does not set {name}, a placeholder of {templates[0].name}")
    if "NGINX_ENVSUBST_FILTER" not in env:
        problems.append("compose: nginx should set NGINX_ENVSUBST_FILTER (e.g. ^SESSIONS_)")
    listen = env.get("SESSIONS_INGRESS_LISTEN", "").split(":")[-1]
    if not any(str(p).split(":")[-1] == listen for p in nginx.get("ports", [])):
        problems.append(f"compose: nginx does not publish its listen port {listen}")
    tree = nginx_parse(text)
    upstreams = {}  # name -> compose services it sends to
    for name, args, body in tree:
        for directive, values, _ in body if name == "upstream" else []:
            if directive != "server":
                continue
            host, _, port = re.sub(r"\$\{(\w+)\}", lambda v: env.get(v[1], v[0]), values[0]).partition(":")
            upstreams.setdefault(args[0], set()).add(host)
            if ports.get(host) not in (None, port):
                problems.append(f"nginx: upstream {args[0]} sends to {host}:{port}, but {host} listens on {ports[host]}")
    locations = [((a[0], a[1]) if a[0] in ("=", "~", "~*", "^~") else ("", a[0])) + (body,)
                 for name, _, server in tree if name == "server" for directive, a, body in server or []
                 if directive == "location" and not a[0].startswith("@")]

    def route(uri):  # -> (service or None, "location …", the URI part of proxy_pass)
        modifier, pattern, body = nginx_match(uri, locations)
        where = f"location {modifier} {pattern}".replace("  ", " ")
        proxy = [a[0] for directive, a, _ in body or [] if directive == "proxy_pass"]
        m = re.match(r"https?://([^/]+)(/.*)?$", proxy[0]) if proxy else None
        hosts = sorted(upstreams.get(m[1], {m[1].partition(":")[0]})) if m else []
        return ", ".join(hosts) or None, where, m and m[2]

    components, prefixes, requests = document.get("components", {}).get("parameters", {}), router_prefixes(), 0
    for path, item in document["paths"].items():
        operations = [op for method, op in item.items() if method != "parameters" and isinstance(op, dict)]
        specs = [components.get(s["$ref"].rsplit("/", 1)[-1], {}) if "$ref" in s else s
                 for s in item.get("parameters", []) + [s for op in operations for s in op.get("parameters", [])]]
        want = owner(path, operations, prefixes)
        if want is None:
            problems.append(f"openapi: nothing says which service serves {path}; tag its operations")
        for uri in samples(path, {s["name"]: s for s in specs if s.get("in") == "path"}) if want else []:
            requests += 1
            got, where, rewrite = route(uri)
            if got != want:
                problems.append(f"nginx: {uri} ({path}) goes to {got or 'no service'} via {where}, but {want} serves it")
            elif rewrite:
                problems.append(f"nginx: {where} rewrites {uri}: its proxy_pass has the URI part {rewrite}")
    for product in SERVICES:
        for probe in ("healthz", "readyz"):
            got, where, rewrite = route(f"/{probe}/{product}")
            if (got, rewrite) != (product, f"/{probe}"):
                problems.append(f"nginx: /{probe}/{product} goes to {got} {rewrite} via {where}, not {product} /{probe}")
    for uri in UNKNOWN_PATHS:
        got, where, _ = route(uri)
        if got:
            problems.append(f"nginx: unknown path {uri} reaches {got} via {where}")
    return requests


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--openapi", required=True, help="the served OpenAPI document (JSON), or - for stdin")
    parser.add_argument("--compose", default=str(ROOT / "compose/docker-compose.yml"))
    parser.add_argument("--notes", action="store_true", help="also list keys the code reads that a README omits")
    args = parser.parse_args()
    compose_file = Path(args.compose).resolve()
    try:
        compose = yaml.safe_load(compose_file.read_text())
        services = {name: service or {} for name, service in compose["services"].items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as error:
        sys.exit(f"check.py: error: {compose_file} is not a compose file with services: {error}")
    try:
        document = json.load(sys.stdin if args.openapi == "-" else open(args.openapi))
        assert str(document["openapi"]).startswith("3.") and isinstance(document["paths"], dict), "not 3.x"
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as error:
        sys.exit(f"check.py: error: {args.openapi} is not an OpenAPI 3 document: {error!r}")

    ports = check_compose(services, compose_file.parent)
    check_dockerfile(compose, compose_file.parent)
    requests = check_nginx(services, ports, compose_file.parent, document)
    notes = [f"Services/{t} reads {k}, which its README does not mention"
             for t in SERVICES.values() for k in sorted(keys_read(t) - readme(t)[0])]
    for note in notes if args.notes else []:
        print(f"check.py: note: {note}", file=sys.stderr)
    for problem in dict.fromkeys(problems):
        print(f"check.py: error: {problem}", file=sys.stderr)
    if problems:
        sys.exit(f"check.py: {len(dict.fromkeys(problems))} problem(s)")
    keys = sum(len(environment_of(services[p])) for p in SERVICES)
    print(f"compose OK: {len(services)} services; {len(SERVICES)} built from compose/Dockerfile with {keys} "
          f"environment keys, all read and documented; {len(document['paths'])} OpenAPI paths ({requests} requests) "
          f"routed to their service, {len(UNKNOWN_PATHS)} unknown paths to none"
          + (f"; {len(notes)} note(s): --notes" if notes and not args.notes else ""))


if __name__ == "__main__":
    main()
