#!/usr/bin/env bash
# Validates the files under deploy/ with what runs offline on this machine:
# yamllint, kubernetes-validate, kustomize (through kubectl, when installed),
# promtool (configuration, rules and rule unit tests), the compose-spec
# schema, and deploy/checks.py for what those tools do not cover. It does not
# build the image or start the Compose stack: both need a Docker engine.
#
# Tools go into .venv-deploy at the repository root: the PyPI packages pinned
# in deploy/requirements.txt, and promtool unpacked from Debian's prometheus
# package unless one is on PATH. The package is unpacked, not installed, so
# no Prometheus server is set up or started. A second run reuses the tools.
#
# Runs every check even after a failure, then exits 1 if any failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly venv=.venv-deploy
readonly k8s_dir=deploy/kubernetes
# The oldest Kubernetes the manifests support (the preStop sleep action is on
# by default from 1.30) and the newest that kubernetes-validate bundles.
readonly kubernetes_versions=(1.30.0 1.37.0)

passed=0
failed=()

die() {
    echo "check.sh: error: $*" >&2
    exit 2
}

# Runs a check and prints its output only when the check fails.
run_check() {
    local name=$1 output status=0
    shift
    output=$("$@" 2>&1) || status=$?
    if [[ $status -eq 0 ]]; then
        echo "ok      $name"
        passed=$((passed + 1))
    else
        echo "FAILED  $name"
        sed 's/^/        /' <<<"$output"
        failed+=("$name")
    fi
}

skip() {
    echo "skipped $1"
}

ensure_python_tools() {
    local stamp=$venv/.requirements.sha256 wanted
    wanted=$(sha256sum deploy/requirements.txt | cut -d ' ' -f 1)
    if [[ -x $venv/bin/python && -f $stamp && $(<"$stamp") == "$wanted" ]]; then
        return
    fi
    echo "installing deploy/requirements.txt into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed: install python3-venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements.txt
    echo "$wanted" >"$stamp"
}

# Sets `promtool` to a promtool binary, unpacking Debian's if none is found.
ensure_promtool() {
    if promtool=$(command -v promtool); then
        return
    fi
    promtool=$venv/bin/promtool
    if [[ -x $promtool ]]; then
        return
    fi
    command -v apt-get >/dev/null ||
        die "promtool is not on PATH and apt-get is missing: install Prometheus's promtool"

    echo "unpacking promtool from Debian's prometheus package into $venv/bin"
    local scratch
    scratch=$(mktemp -d)
    # apt downloads as its _apt user, which cannot write to a temporary
    # directory owned by root, so root downloads as itself.
    local apt_options=()
    [[ $(id -u) -eq 0 ]] && apt_options=(-o APT::Sandbox::User=root)
    if ! (cd "$scratch" && apt-get -q "${apt_options[@]}" download prometheus); then
        rm -rf "$scratch"
        die "apt-get download prometheus failed: run apt-get update, or install promtool"
    fi
    dpkg-deb -x "$scratch"/prometheus_*.deb "$scratch/root"
    install -m 755 "$scratch/root/usr/bin/promtool" "$promtool"
    rm -rf "$scratch"
}

check_kubernetes() {
    local manifests=() file version
    for file in "$k8s_dir"/*.yaml; do
        case ${file##*/} in
            kustomization.yaml) ;;
            keda.yaml) ;;
            *) manifests+=("$file") ;;
        esac
    done
    for version in "${kubernetes_versions[@]}"; do
        run_check "kubernetes-validate --strict, Kubernetes $version" \
            "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
    done
    echo "        (keda.yaml is left out: kubernetes-validate bundles no schema for" \
        "KEDA's custom resources, so checks.py kubernetes checks their shape)"
    run_check "KEDA objects and Deployment rules (checks.py kubernetes)" \
        "$venv/bin/python" deploy/checks.py kubernetes "$k8s_dir"

    if ! command -v kubectl >/dev/null; then
        skip "kustomization render: kubectl is not installed"
        return
    fi
    local rendered
    rendered=$(mktemp --suffix=.yaml)
    run_check "kustomization renders every manifest but the example Secret" \
        bash -c 'kubectl kustomize "$1" >"$2" && "$3" deploy/checks.py kustomize "$2" "$1"' \
        _ "$k8s_dir" "$rendered" "$venv/bin/python"
    rm -f "$rendered"
}

check_prometheus() {
    run_check "promtool check config" "$promtool" check config deploy/prometheus/prometheus.yml
    run_check "promtool check rules" "$promtool" check rules deploy/prometheus/alerts.yml
    run_check "promtool test rules" "$promtool" test rules deploy/prometheus/alerts_test.yml
}

check_grafana() {
    run_check "dashboard structure and PromQL syntax (checks.py dashboard)" \
        "$venv/bin/python" deploy/checks.py dashboard deploy/grafana/attache-dashboard.json "$promtool"
    run_check "alerts and panels use only known metrics (checks.py metrics)" \
        "$venv/bin/python" deploy/checks.py metrics deploy/prometheus/alerts.yml \
        deploy/grafana/attache-dashboard.json
}

check_compose() {
    run_check "compose.yaml against the compose-spec schema" \
        "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml
    run_check "compose services, loopback ports, mounts (checks.py compose)" \
        "$venv/bin/python" deploy/checks.py compose deploy/compose/compose.yaml
}

main() {
    command -v python3 >/dev/null || die "python3 is missing"
    ensure_python_tools
    ensure_promtool

    run_check "yamllint --strict" "$venv/bin/yamllint" --strict -c deploy/.yamllint deploy
    check_kubernetes
    check_prometheus
    check_grafana
    check_compose
    skip "image build and Compose stack: they need a Docker engine"

    echo "deploy: $passed passed, ${#failed[@]} failed"
    [[ ${#failed[@]} -eq 0 ]]
}

main "$@"
