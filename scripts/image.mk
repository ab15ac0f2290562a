# Image targets (included by the top Makefile).  Each delegates to a module under scripts/image/.
BOARD ?= rpi4
DEBUG ?= 0
IMAGE_ARGS = --board $(BOARD) $(if $(filter 1 yes true,$(DEBUG)),--debug,) $(if $(filter 1 yes true,$(RELEASE)),--release,) $(if $(TRUST_ROOT),--trust-root $(TRUST_ROOT),)
BOARDS := $(sort $(filter-out common,$(notdir $(wildcard board/*))))
comma := ,
empty :=
space := $(empty) $(empty)

.PHONY: image image-deps lock lock-status qemu check-repro board-ok

# A wrong BOARD is refused before anything is installed (the same words as the build's check).
board-ok:
	@$(if $(filter $(BOARD),$(BOARDS)),true,\
	  echo "error: unknown BOARD='$(BOARD)'; boards: $(subst $(space),$(comma)$(space),$(BOARDS))" >&2; \
	  echo "hint: run: make image BOARD=$(firstword $(BOARDS))" >&2; exit 64)

# `make test` runs the image tests too: their host tools come with the test dependencies.
deps: image-deps

image-deps: ## install the image build's host tools (as root, pip into .venv/), enable arm64 emulation
	bash scripts/image/deps.sh

image: board-ok image-deps ## build out/$(BOARD)/coalmine-$(BOARD).img[.xz] (BOARD=rpi4|qemu-arm64, DEBUG=1)
	$(PYTHON) -m scripts.image.build $(IMAGE_ARGS)

lock: image-deps ## re-pin board/common/packages.lock (release, updates, security suites) and say what changed
	$(PYTHON) -m scripts.image.lock lock

lock-status: image-deps ## which locked packages have newer versions (security fixes first); the lock is not changed
	$(PYTHON) -m scripts.image.lock status

qemu: image-deps ## boot out/qemu-arm64 under qemu-system-aarch64 (serial console here; Ctrl-a x quits)
	$(PYTHON) -m scripts.image.qemu $(if $(filter 1 yes true,$(DEBUG)),--debug,) $(QEMU_ARGS)

check-repro: board-ok image-deps ## build BOARD twice from scratch and compare SHA-256 of every output
	$(PYTHON) -m scripts.image.repro --board $(BOARD)
