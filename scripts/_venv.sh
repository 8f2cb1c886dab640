# Shared by scripts/run and scripts/test: create .venv and install the project when needed.
ensure_venv() {
    extras="$1"
    python=${PYTHON:-python3}
    if [ ! -x .venv/bin/python ]; then
        echo "Creating .venv with $($python --version)"
        "$python" -m venv .venv
    fi
    stamp=".venv/.installed$extras"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "Installing Circulars${extras:+ with $extras} into .venv"
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -e ".$extras"
        touch "$stamp"
    fi
}
