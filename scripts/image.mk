# Image targets (included by the top Makefile).  Each delegates to a module under scripts/image/.
BOARD ?= rpi4
DEBUG ?= 0
IMAGE_ARGS = --board $(BOARD) $(if $(filter 1 yes true,$(DEBUG)),--debug,)

.PHONY: image image-deps lock qemu check-repro

# `make test` runs the image tests too: their host tools come with the test dependencies.
deps: image-deps

image-deps: ## install the image build's host tools (as root) and enable arm64 emulation
	bash scripts/image/deps.sh

image: image-deps ## build out/$(BOARD)/coalmine-$(BOARD).img[.xz] (BOARD=rpi4|qemu-arm64, DEBUG=1)
	$(PYTHON) -m scripts.image.build $(IMAGE_ARGS)

lock: ## re-pin board/common/packages.lock to what Debian's archive serves now
	$(PYTHON) -m scripts.image.lock lock

qemu: ## boot out/qemu-arm64 under qemu-system-aarch64 (serial console here; Ctrl-a x quits)
	$(PYTHON) -m scripts.image.qemu $(if $(filter 1 yes true,$(DEBUG)),--debug,) $(QEMU_ARGS)

check-repro: image-deps ## build BOARD twice from scratch and compare SHA-256 of every output
	$(PYTHON) -m scripts.image.repro --board $(BOARD)
