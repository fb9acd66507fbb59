# body4d — the two commands: `make test` and `make run`. Both set everything up from nothing
# (Debian packages, .venv, Python packages) and are quick when already set up.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.body4d-installed
GLTF_VALIDATOR := tests/gltf/node_modules
# Debian packages the app needs at run time (the Dockerfile installs the same list; tests/test_dockerfile.py
# checks): libGL/glib for OpenCV, EGL + Mesa for the mesh renderer.
RUNTIME_APT_PACKAGES := libgl1 libglib2.0-0 libegl1 libgl1-mesa-dri libegl-mesa0
# Only for the tests: Chromium for browser tests, Blender for the GLB import test (+ numpy, which its glTF
# importer needs but the package does not pull in), rsync + OpenSSH for scripts/cloud/sync_data.sh.
# Node.js + npm (the glTF validator of the tests) are added only when no npm is on PATH.
TEST_APT_PACKAGES := chromium blender python3-numpy rsync openssh-client openssh-server
APT_PACKAGES := $(RUNTIME_APT_PACKAGES) $(TEST_APT_PACKAGES)
BODY4D_HOST ?= 127.0.0.1
BODY4D_PORT ?= 7860
export BODY4D_HOST BODY4D_PORT

.PHONY: test run setup system-deps lint format bench clean-venv

test: setup lint
	$(PY) -m pytest -q

run: setup
	$(PY) app.py

setup: system-deps $(STAMP) $(GLTF_VALIDATOR)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Khronos glTF validator (Node.js) for tests/test_glb.py, pinned by its package-lock.json.
$(GLTF_VALIDATOR): tests/gltf/package-lock.json | system-deps
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: the GLB tests need Node.js >= 18 with npm (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix tests/gltf --no-audit --no-fund
	@touch $@

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) benchmarks/video_io.py

clean-venv:
	rm -rf $(VENV)
