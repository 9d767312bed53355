# sluice - one non-recursive Makefile.
#
#   make            release build of bin/sluice
#   make test       sanitizer build (ASan + UBSan) of every test, then run them all
#   make demo       run the README's demo
#   make bench      benchmarks, built optimized
#   make format     clang-format every C file in place (format-check: verify only)
#   make lint       clang-tidy over every C file, zero findings
#   make deps       install the Debian packages everything above needs
#   make image      the container image from the Dockerfile (needs a Docker engine)
#
# All modules compile into one static library per variant (libsluice.a); the binary,
# the tests, the fuzzers and the benchmarks link it. Variants live under build/<variant>/.

.DEFAULT_GOAL := all
SHELL := /bin/bash

PKGS       := libuv libpq hiredis libcurl libcjson yaml-0.1 libgit2 libcrypto zlib
# the REST API (api/): h2o, the libuv build (Debian's libh2o-dev)
PKGS       += libh2o
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) check 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)

CC     ?= cc
CLANG  ?= clang
WARN   := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
          -Wformat=2 -Wno-format-nonliteral -Wvla
STD    := -std=c11 -D_POSIX_C_SOURCE=200809L
CFLAGS_BASE := $(STD) $(WARN) -I. -Ibuild $(PKG_CFLAGS) -MMD -MP

CFLAGS_release := -O2 -g
CFLAGS_asan    := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                  -fno-sanitize-recover=all
LDFLAGS_release :=
LDFLAGS_asan    := -fsanitize=address,undefined

MODULES  := common dsl store queue scheduler worker api
LIB_SRCS := $(sort $(foreach m,$(MODULES),$(wildcard $(m)/*.c)))
CLI_SRCS := $(sort $(wildcard cli/*.c))
# cli/ files the tests exercise directly (everything else of cli/ is tested via the binary)
CLI_LIB_SRCS := $(wildcard cli/embed.c)
TEST_SRCS := $(sort $(wildcard tests/unit/*/*.c tests/integration/*.c tests/harness/*.c)) \
             tests/check_main.c tests/testutil.c
BENCH_SRCS := $(sort $(wildcard bench/*.c))
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
ALL_C     := $(LIB_SRCS) $(CLI_SRCS) $(TEST_SRCS) $(BENCH_SRCS) $(FUZZ_SRCS)
ALL_H     := $(sort $(wildcard */*.h tests/*/*.h))

obj = $(patsubst %.c,build/$(1)/obj/%.o,$(2))

# Test suites are found by name: tests/<dir>/<sub>/check_<name>.c defines
# Suite *suite_<sub>_<name>(void). build/suites.inc lists them for tests/check_main.c.
SUITE_SRCS := $(filter-out tests/check_main.c tests/testutil.c tests/harness/%,$(TEST_SRCS))
SUITE_NAMES := $(foreach f,$(SUITE_SRCS),$(notdir $(patsubst %/,%,$(dir $(f))))_$(patsubst check_%.c,%,$(notdir $(f))))
build/suites.inc: Makefile $(SUITE_SRCS)
	@mkdir -p $(@D)
	@printf 'SUITE(%s)\n' $(SUITE_NAMES) > $@.tmp && mv $@.tmp $@

# --- per-variant rules -------------------------------------------------------------
define VARIANT
build/$(1)/obj/%.o: %.c
	@mkdir -p $$(@D)
	@echo "  CC [$(1)] $$<"
	@$$(CC) $$(CFLAGS_BASE) $$(CFLAGS_$(1)) -c $$< -o $$@

build/$(1)/libsluice.a: $(call obj,$(1),$(LIB_SRCS))
	@mkdir -p $$(@D)
	@rm -f $$@ && ar rcs $$@ $$^

build/$(1)/bin/sluice: $(call obj,$(1),$(CLI_SRCS)) build/$(1)/libsluice.a
	@mkdir -p $$(@D)
	$$(CC) $$(LDFLAGS_$(1)) -o $$@ $$^ $$(PKG_LIBS) -lm

$(call obj,$(1),$(TEST_SRCS)): build/suites.inc

build/$(1)/tests/check_sluice: $(call obj,$(1),$(TEST_SRCS) $(CLI_LIB_SRCS)) build/$(1)/libsluice.a
	@mkdir -p $$(@D)
	$$(CC) $$(LDFLAGS_$(1)) -o $$@ $$^ $$(PKG_LIBS) $$(CHECK_LIBS) -lm

endef
$(eval $(call VARIANT,release))
$(eval $(call VARIANT,asan))
# api/openapi.c embeds api/openapi.json (.incbin), which -MMD cannot see
build/release/obj/api/openapi.o build/asan/obj/api/openapi.o: api/openapi.json
-include $(patsubst %.c,build/release/obj/%.d,$(ALL_C)) $(patsubst %.c,build/asan/obj/%.d,$(ALL_C))

.PHONY: all deps test unit demo bench format format-check lint fuzz clean
all: bin/sluice compile_commands.json

bin/sluice: build/release/bin/sluice
	@mkdir -p bin
	cp $< $@

# Installs the Debian packages; quiet and quick when nothing is missing.
deps:
	@bash scripts/deps.sh

# Every unit and integration test under ASan + UBSan, after a bounded fuzz run
# (TEST_FUZZ_SECONDS per target).
TEST_FUZZ_SECONDS ?= 20
test: deps
	@$(MAKE) --no-print-directory build/asan/tests/check_sluice build/asan/bin/sluice
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)
	SLUICE_BIN=$(CURDIR)/build/asan/bin/sluice SLUICE_SRC=$(CURDIR) \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  build/asan/tests/check_sluice

# The README's demo: dags/iris.yaml through `sluice dag test` on embedded servers.
demo: deps
	@$(MAKE) --no-print-directory bin/sluice
	bash scripts/demo.sh

# Each bench/*.c is a program of its own (bench/README.md): bench_dsl parses DAGs,
# bench_engine runs the whole engine on embedded servers, next to Celery; bench_git syncs
# a repository of 1,000 DAG files next to `git fetch`; bench_api loads the REST API
# with wrk; bench_s3 moves 1 GiB through the S3 client and curl against s3rver.
BENCH_BINS := $(patsubst bench/%.c,build/release/bench/%,$(BENCH_SRCS))
bench: deps
	@$(MAKE) --no-print-directory $(BENCH_BINS) bin/sluice
	build/release/bench/bench_dsl
	build/release/bench/bench_engine
	build/release/bench/bench_git
	build/release/bench/bench_api
	build/release/bench/bench_s3
	build/release/bench/bench_kube

build/release/bench/bench_engine build/release/bench/bench_git: build/release/bench/%: \
		build/release/obj/bench/%.o build/release/obj/cli/embed.o build/release/libsluice.a
	@mkdir -p $(@D)
	$(CC) -o $@ $^ $(PKG_LIBS) -lm

# the REST API under wrk, on the embedded servers
build/release/bench/bench_api: build/release/obj/bench/bench_api.o \
		build/release/obj/cli/embed.o build/release/libsluice.a
	@mkdir -p $(@D)
	$(CC) -o $@ $^ $(PKG_LIBS) -lm

build/release/bench/%: build/release/obj/bench/%.o build/release/libsluice.a
	@mkdir -p $(@D)
	$(CC) -o $@ $^ $(PKG_LIBS) -lm

# libFuzzer targets, built with clang; each runs for FUZZ_SECONDS (default 60).
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS := $(STD) $(WARN) -I. $(PKG_CFLAGS) -g -O1 \
               -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
# Everything dsl/ links against: keep in step with the common/ headers dsl/*.c include.
FUZZ_LIB_SRCS := common/error.c common/xalloc.c common/strbuf.c common/arena.c common/log.c \
                 common/duration.c common/timeutil.c common/tz.c $(sort $(wildcard dsl/*.c))
build/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_SRCS) $(ALL_H)
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_LIB_SRCS) $(PKG_LIBS) -lm
fuzz: $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRCS))
	@for f in $^; do \
	  name=$$(basename $$f); corpus=tests/fuzz/corpus/$$name; mkdir -p build/fuzz/work/$$name; \
	  dict=tests/fuzz/$${name#fuzz_}.dict; [ -f $$dict ] && dict=-dict=$$dict || dict=; \
	  echo "fuzz: $$name for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
	      -print_final_stats=1 -artifact_prefix=build/fuzz/work/$$name- $$dict \
	      build/fuzz/work/$$name $$corpus \
	      >build/fuzz/work/$$name.log 2>&1 || { tail -60 build/fuzz/work/$$name.log; exit 1; }; \
	  grep -E '^#[0-9]+.*DONE' build/fuzz/work/$$name.log | tail -1; \
	  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
	      build/fuzz/work/$$name.log | tr '\n' ' '; echo; \
	done

format:
	clang-format -i $(ALL_C) $(ALL_H)

format-check:
	clang-format --dry-run -Werror $(ALL_C) $(ALL_H)

# clang-tidy over the library and the CLI, two files at a time; any finding fails.
lint: compile_commands.json
	@mkdir -p build
	@printf '%s\n' $(LIB_SRCS) $(CLI_SRCS) | xargs -P2 -n4 clang-tidy --quiet -p . 2>/dev/null \
	  | grep -E 'warning:|error:' -A3 > build/lint.txt || true
	@if [ -s build/lint.txt ]; then cat build/lint.txt; exit 1; else echo "lint: clean"; fi

# compile_commands.json for clangd and clang-tidy, written from the same flags.
compile_commands.json: Makefile $(ALL_C)
	@{ echo '['; sep=''; for f in $(ALL_C); do \
	  printf '%s{"directory":"%s","file":"%s","command":"%s %s -c %s"}\n' "$$sep" "$(CURDIR)" \
	    "$$f" "$(CC)" "$(CFLAGS_BASE) $(CFLAGS_release)" "$$f"; sep=','; done; echo ']'; } > $@

clean:
	rm -rf build bin compile_commands.json

# --- container image (Dockerfile; docs/operations.md) -------------------------------
# Builds the one sluice image with a Docker engine. Where none is reachable it says so
# and fails: it never pretends to have built anything.
IMAGE ?= sluice:dev
.PHONY: image
image:
	@command -v docker >/dev/null 2>&1 || { \
	  echo "image: no docker command on this machine: cannot build $(IMAGE)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { \
	  echo "image: no Docker engine is reachable (docker info failed): cannot build $(IMAGE)" >&2; exit 1; }
	docker build -t $(IMAGE) .
