# herald: plain Makefile with pkg-config (see STYLE.md). Targets:
#   make            build/herald, build/herald-bench, build/herald-tokenbench (optimised)
#   make test       installs what tests need, runs unit (ASan+UBSan), fuzz smoke, e2e
#   make fuzz       builds the libFuzzer targets (clang)
#   make bench      runs the standard benchmark set, writes docs/benchmarks.md
CC      ?= cc
PKGS    := libuv libssl libcrypto hiredis libpq libcurl
WARN    := -std=c11 -Wall -Wextra -Wshadow -Werror -Wno-unused-parameter
DEFS    := -D_GNU_SOURCE -Isrc
CFLAGS  ?= -O2 -g
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

LIB_SRC   := $(filter-out src/main.c,$(wildcard src/*/*.c))
BENCH_SRC := $(wildcard tools/bench/*.c)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)

OBJ      := $(LIB_SRC:%.c=build/obj/%.o)
ASAN_OBJ := $(LIB_SRC:%.c=build/asan/%.o)
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

all: build/herald build/herald-bench build/herald-ceiling build/herald-tokenbench build/herald-stall

build/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(DEFS) $(CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

build/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(DEFS) -O1 -g $(SAN) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

# Browser assets embedded in the binary: the demo page, the status page and the official centrifuge
# client from npm (web/node_modules, installed by the quick start's first command).
ASSET_OBJ := build/gen/assets.o
CENTRIFUGE_JS := web/node_modules/centrifuge/dist/centrifuge.js
$(ASSET_OBJ): web/index.html web/status.html $(wildcard $(CENTRIFUGE_JS))
	@mkdir -p build/gen
	cp web/index.html web/status.html build/gen/
	if [ -f $(CENTRIFUGE_JS) ]; then cp $(CENTRIFUGE_JS) build/gen/centrifuge.js; \
	else echo '/* centrifuge client not installed: run npm ci --prefix web, then make */' > build/gen/centrifuge.js; fi
	cd build/gen && ld -r -b binary -z noexecstack -o assets.o index.html status.html centrifuge.js

OBJ += $(ASSET_OBJ)
ASAN_OBJ += $(ASSET_OBJ)

build/libherald.a: $(OBJ)
	@rm -f $@; ar rcs $@ $^

build/libherald-asan.a: $(ASAN_OBJ)
	@rm -f $@; ar rcs $@ $^

# herald_build_info's commit label (main.o is rebuilt only when main.c changes).
HERALD_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
build/obj/src/main.o build/asan/src/main.o build/tsan/src/main.o: DEFS += -DHERALD_COMMIT='"$(HERALD_COMMIT)"'

build/herald: build/obj/src/main.o build/libherald.a
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)

build/herald-asan: build/asan/src/main.o build/libherald-asan.a
	$(CC) -g $(SAN) -o $@ $^ $(PKG_LIBS)

# ThreadSanitizer build: the multi-loop end-to-end tests run against it too.
TSAN_OBJ := $(LIB_SRC:%.c=build/tsan/%.o)
build/tsan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(DEFS) -O1 -g -fsanitize=thread $(PKG_CFLAGS) -MMD -MP -c $< -o $@

build/herald-tsan: build/tsan/src/main.o $(TSAN_OBJ) $(ASSET_OBJ)
	$(CC) -g -fsanitize=thread -o $@ $^ $(PKG_LIBS)

build/herald-bench: $(BENCH_SRC:%.c=build/obj/%.o) build/libherald.a
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)

# Token verifications per second (HS256, RS256, ES256) on one thread.
build/herald-tokenbench: build/obj/tools/tokenbench/tokenbench.o build/libherald.a
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)

# The machine's ceiling for docs/benchmarks.md: a minimal fan-out server, same frames, same sockets.
build/herald-ceiling: build/obj/tools/ceiling/ceiling.o
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)

# How long this machine takes a CPU away from a program that wants it (tail latencies).
build/herald-stall: build/obj/tools/stall/stall.o
	$(CC) $(CFLAGS) -o $@ $^ -lpthread

# Unit tests: one binary per tests/unit/test_*.c, sanitized.
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=build/unit/%)
build/unit/%: build/asan/tests/unit/%.o build/libherald-asan.a
	@mkdir -p $(dir $@)
	$(CC) -g $(SAN) -o $@ $^ $(PKG_LIBS)
# herald-bench's histograms are the load tool's, not the library's
build/unit/test_bench_hist: build/asan/tools/bench/hist.o

# Fuzz targets: libFuzzer (clang), linked against the library sources directly.
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_CC  := clang
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_OBJ := $(LIB_SRC:%.c=build/fuzzobj/%.o) $(ASSET_OBJ)
build/fuzzobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(DEFS) -g -O1 -fsanitize=fuzzer-no-link $(FUZZ_SAN) $(PKG_CFLAGS) -MMD -MP -c $< -o $@
build/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(DEFS) -g -O1 -fsanitize=fuzzer $(FUZZ_SAN) $(PKG_CFLAGS) -o $@ $^ $(PKG_LIBS)

fuzz: $(FUZZ_BIN)

unit: $(UNIT_BIN)
	@scripts/run-unit $(UNIT_BIN)

# Dependencies are installed first, in a separate make, so that pkg-config finds them.
test:
	@scripts/build-deps --test
	@scripts/test-deps
	@$(MAKE) --no-print-directory test-run

test-run: all build/herald-asan build/herald-tsan unit fuzz
	@scripts/run-tests

bench:
	@scripts/build-deps
	@$(MAKE) --no-print-directory all
	@scripts/bench

clean:
	rm -rf build

.PHONY: all test test-run unit fuzz bench clean
.SECONDARY:
-include $(shell find build -name '*.d' 2>/dev/null)
