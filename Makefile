# The two commands of a fresh machine (see README.md):
#   make demo   installs what is needed, builds the default sample core and finds its leak
#   make test   installs what is needed and runs the CI tier of the test suite (what CI runs)
#   make test-all  the whole matrix: every test on every kernel line
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KERNEL ?= 6.1
SCENARIO ?= i40e-leak
APT_PACKAGES := qemu-system-x86 qemu-utils makedumpfile kexec-tools kmod busybox-static \
                cpio e2fsprogs iproute2 gcc make libc6-dev libelf1 xz-utils dpkg \
                chromium-headless-shell fonts-dejavu-core gdb flex bison libelf-dev bc \
                prometheus prometheus-node-exporter

.PHONY: demo test test-all deps venv cores

demo: deps venv
	$(BIN)/python -m sample_cores build $(SCENARIO) --kernel $(KERNEL) >/dev/null
	$(BIN)/python -m sample_cores show $(SCENARIO) --kernel $(KERNEL)
	$(BIN)/vmcore-tools report $$($(BIN)/python -m sample_cores args $(SCENARIO) --kernel $(KERNEL))

test: deps venv
	$(BIN)/pytest

test-all: deps venv
	$(BIN)/pytest -m "full or not full"

cores: deps venv
	$(BIN)/python -m sample_cores build $(SCENARIO) --kernel all

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(BIN)/vmcore-tools

$(BIN)/vmcore-tools: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@
