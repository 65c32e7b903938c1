# warren: one non-recursive Makefile. Output goes to build/ (build/san/ with
# SANITIZE=1); binaries to $(BUILD)/bin. Quiet unless V=1.
#
#   make            library, programs
#   make check      install missing packages (as root), build, run every test
#                   against a private RabbitMQ node (and PostgreSQL when needed)
#   make check-unit unit tests only (no broker)
#   make check-faults  the fault-injection kit, each fault under load for 30 s,
#                   then a table of its figures, one row per scenario
#   make fuzz       each libFuzzer target (tests/fuzz/) for FUZZ_SECONDS (300)
#   make demo       the system working end to end, from a fresh machine
#   make bench      warren against a hand-written rabbitmq-c baseline, side by
#                   side on a private broker (tests/bench/bench.sh)
#   make install / uninstall   PREFIX=/usr/local DESTDIR=
#
# Configuration goes to $(SYSCONFDIR)/warren, which is /etc/warren whatever
# PREFIX is: that is where the units and the man pages look. The units are
# installed with their paths (/usr/local/sbin, /etc/warren,
# /usr/local/share/warren) rewritten to SBINDIR, SYSCONFDIR and DATADIR. A
# configuration file already installed is kept, and uninstall removes one
# only when it is still as shipped.

# The version is written once, as WARREN_VERSION in src/rpc/warren.h (what
# programs print and library users compile against); the library's file
# name and warren.pc take it from there. tests/unit/test_version.sh checks.
VERSION    := $(shell sed -n 's/^\#define WARREN_VERSION "\([0-9][0-9.]*\)"$$/\1/p' src/rpc/warren.h)
ifeq ($(VERSION),)
$(error src/rpc/warren.h: no WARREN_VERSION "X.Y.Z" to take the version from)
endif
SOVERSION  := 0
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
DATADIR    ?= $(PREFIX)/share
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system

ifeq ($(SANITIZE),1)
BUILD      ?= build/san
SAN_FLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD      ?= build
SAN_FLAGS  :=
endif

CC         ?= cc
OPT        ?= -O2 -g
WARN       := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wwrite-strings -Wmissing-prototypes \
              -Wno-unused-parameter -Wno-format-truncation -Werror
# Warnings are added to the user's CFLAGS rather than replacing them.
PQ_CFLAGS  := $(shell pkg-config --cflags libpq 2>/dev/null || echo -I/usr/include/postgresql)
ALL_CFLAGS := -std=c11 -D_DEFAULT_SOURCE -D_GNU_SOURCE $(OPT) $(WARN) $(SAN_FLAGS) -fPIC \
              -fvisibility=hidden -pthread -MMD -MP -Isrc/rpc -Isrc/client -Isrc/client/tools \
              -Isrc/workers -Itests/lib $(PQ_CFLAGS) $(CFLAGS)
DEP_LIBS   := -lrabbitmq -lmsgpackc -ljansson -linih -lsodium -lmicrohttpd -lm
# The same dependencies for warren.pc (config/warren.pc.in): those with a
# usable .pc file as Requires.private, the others (msgpack.pc has a wrong
# libdir on Debian; libmicrohttpd.pc's static libraries drag in GnuTLS's whole
# tree, libunistring.a included, which Debian does not ship) and -pthread as
# Libs.private. test_install.sh checks that
# pkg-config --static --libs warren names every library of DEP_LIBS.
PC_REQUIRES:= librabbitmq jansson inih libsodium
PC_LIBS    := -lmsgpackc -lmicrohttpd -lm -pthread
ALL_LDFLAGS:= $(SAN_FLAGS) -pthread $(LDFLAGS)

ifeq ($(V),1)
Q :=
else
Q := @
endif

# libwarren, named file by file: the core, the caller side, the worker side.
# A new file joins the library only by being listed here (test_lib_sources.sh
# checks that every source file under src/ is in exactly one list).
LIB_SRC    := src/rpc/backoff.c src/rpc/batch.c src/rpc/cli.c src/rpc/codec_msgpack.c src/rpc/config.c \
              src/rpc/connect.c src/rpc/engine.c src/rpc/envelope.c src/rpc/errors.c src/rpc/fastrand.c \
              src/rpc/log.c src/rpc/metrics_http.c src/rpc/patterns.c src/rpc/prom.c \
              src/rpc/seal.c src/rpc/secret.c src/rpc/security.c src/rpc/sign.c \
              src/rpc/trace.c src/rpc/utf8.c src/rpc/value.c src/rpc/value_json.c \
              src/rpc/wire_declare.c src/rpc/wire_headers.c src/rpc/wire_names.c \
              src/client/client.c src/client/client_batch.c src/client/client_metrics.c \
              src/client/client_publish.c src/client/client_reply.c src/client/client_request.c \
              src/client/lanes.c src/client/pending.c src/client/reply.c \
              src/workers/breaker.c src/workers/daemon.c src/workers/forward.c \
              src/workers/handlerq.c src/workers/job.c src/workers/lane.c src/workers/metrics.c \
              src/workers/replycache.c src/workers/request.c src/workers/requeue.c src/workers/retry.c \
              src/workers/sdnotify.c src/workers/spare.c src/workers/timelimit.c src/workers/worker.c
LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
# Both libraries are made from one object, libwarren.o: the library's
# objects linked together (ld -r), then every symbol -fvisibility=hidden
# hid (all but WARREN_API's) made local (objcopy --localize-hidden). So
# libwarren.a, like libwarren.so, exports warren_* alone, and a program
# linking it statically may name its own functions log_event or config_int
# (test_symbols.sh). The programs and the tests, which use the internal
# modules, link the same objects as they are: an internal archive, never
# installed.
LIB_RELOC  := $(BUILD)/obj/libwarren.o
INT_LIB    := $(BUILD)/lib/libwarren-internal.a
OBJCOPY    ?= objcopy
# What programs share and the library does not use: an internal archive,
# never installed, linked before the library's objects. Its folder,
# src/client/tools/, holds the command-line tools' shared modules (the
# synchronous connection of rpc-dlq and its tests); a file put there joins
# this archive, never the library. (The command line and sd_notify are the
# library's: warren_daemon uses them.)
TOOL_SRC   := $(wildcard src/client/tools/*.c)
TOOL_OBJ   := $(TOOL_SRC:%.c=$(BUILD)/obj/%.o)
TOOLS_LIB  := $(BUILD)/lib/libwarren-tools.a
# The programs, each in a folder of its own and made of every C file there:
# its main and its own modules (rpc-call's load mode, rpc-dlq's dead
# letters, the user service's handlers and PostgreSQL store). NAME_SRC are
# a program's sources, NAME_LIBS the archives it links (default: the tools'
# archive and the library's objects as they are; notify-user and the two
# services, written on warren.h alone, link the libwarren.a that is
# installed), NAME_LDLIBS
# what it needs besides DEP_LIBS.
PROGRAM_NAMES := rpc-call rpc-dlq notify-user warren-key example-service user-service
rpc-call_SRC        := $(wildcard src/client/rpc-call/*.c)
rpc-dlq_SRC         := $(wildcard src/client/rpc-dlq/*.c)
notify-user_SRC     := $(wildcard src/client/notify-user/*.c)
notify-user_LIBS     = $(STATIC_LIB)
warren-key_SRC      := $(wildcard src/client/warren-key/*.c)
example-service_SRC := $(wildcard src/workers/example/*.c)
example-service_LIBS = $(STATIC_LIB)
user-service_SRC    := $(wildcard src/workers/user/*.c)
user-service_LIBS    = $(STATIC_LIB)
user-service_LDLIBS := -lpq
PROG_SRC   := $(foreach p,$(PROGRAM_NAMES),$($(p)_SRC))
PROGRAMS   := $(PROGRAM_NAMES:%=$(BUILD)/bin/%)
# objs FILES: the objects of the sources FILES.
objs        = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
STATIC_LIB := $(BUILD)/lib/libwarren.a
SHARED_LIB := $(BUILD)/lib/libwarren.so.$(VERSION)

# What make install adds besides the library and programs.
# The example programs (notify-user, example-service) are built in the tree
# and not installed: neither are their pages.
EXAMPLE_MAN:= man/notify-user.1 man/example-service.8
MAN_PAGES  := $(filter-out $(EXAMPLE_MAN),$(wildcard man/*.[1-9]))
CONF_FILES := config/warren.conf config/user-service.conf
UNIT_FILES := config/user-service.service config/user-service@.service
UNIT_PATHS := -e 's\#/usr/local/sbin/\#$(SBINDIR)/\#g' -e 's\#/etc/warren/\#$(SYSCONFDIR)/warren/\#g' \
              -e 's\#/usr/local/share/warren/\#$(DATADIR)/warren/\#g'
# warren.pc names LIBDIR and INCLUDEDIR from ${prefix} when they are under
# PREFIX, so that pkg-config --define-variable=prefix=... can move them
# (set with =, not :=, so that the $$ survives until the recipe is expanded).
PC_VARS     = -e 's\#@PREFIX@\#$(PREFIX)\#' -e 's\#@VERSION@\#$(VERSION)\#' \
              -e 's\#@LIBDIR@\#$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))\#' \
              -e 's\#@INCLUDEDIR@\#$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))\#' \
              -e 's\#@PC_REQUIRES@\#$(PC_REQUIRES)\#' -e 's\#@PC_LIBS@\#$(PC_LIBS)\#'

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%)
IT_SRC     := $(wildcard tests/integration/it_*.c)
IT_BIN     := $(IT_SRC:tests/integration/%.c=$(BUILD)/tests/integration/%)
FAULT_SRC  := $(wildcard tests/fault/*.c)
FAULT_BIN  := $(FAULT_SRC:tests/fault/%.c=$(BUILD)/tests/fault/%)
# The benchmark: its programs, and the module they share (benchlib.c).
BENCH_LIB_SRC := tests/bench/benchlib.c
BENCH_LIB_OBJ := $(BENCH_LIB_SRC:%.c=$(BUILD)/obj/%.o)
BENCH_SRC  := $(filter-out $(BENCH_LIB_SRC),$(wildcard tests/bench/*.c))
BENCH_BIN  := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/tests/bench/%)
TEST_LIB_SRC := $(wildcard tests/lib/*.c)
TEST_LIB_OBJ := $(TEST_LIB_SRC:%.c=$(BUILD)/obj/%.o)

# libFuzzer targets (tests/fuzz/fuzz_NAME.c), built by clang with ASan and
# UBSan into $(FUZZ_DIR) from the library sources they reach (FUZZ_LIB_SRC:
# only those, so that a clang-only warning elsewhere cannot break make tests).
# make tests builds them when clang and its libFuzzer runtime are installed;
# when they are not, tests/fuzz/test_fuzz.sh fails and names the packages.
FUZZ_CC    ?= clang
FUZZ_DIR   := $(BUILD)/fuzz
FUZZ_SECONDS ?= 300
FUZZ_RT    := $(if $(shell command -v $(FUZZ_CC) 2>/dev/null),$(wildcard \
              $(shell $(FUZZ_CC) --print-runtime-dir 2>/dev/null)/libclang_rt.fuzzer*.a))
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS:= -std=c11 -D_DEFAULT_SOURCE -D_GNU_SOURCE -O1 -g $(WARN) -Wno-unknown-warning-option \
              $(FUZZ_SAN) -fsanitize=fuzzer-no-link -pthread -MMD -MP -Isrc/rpc -Itests/fuzz
FUZZ_LIB_SRC := src/rpc/codec_msgpack.c src/rpc/config.c src/rpc/envelope.c src/rpc/errors.c \
              src/rpc/utf8.c src/rpc/value.c src/rpc/value_json.c src/rpc/security.c \
              src/rpc/sign.c src/rpc/seal.c src/rpc/patterns.c src/rpc/secret.c \
              src/rpc/wire_headers.c tests/fuzz/oracle.c
FUZZ_OBJ   := $(FUZZ_LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_BIN   := $(patsubst tests/fuzz/%.c,$(FUZZ_DIR)/%,$(wildcard tests/fuzz/fuzz_*.c))

.PHONY: all check check-faults check-unit check-integration demo deps clean install uninstall tests style \
        fuzz bench version sources

all: $(STATIC_LIB) $(SHARED_LIB) $(PROGRAMS)

tests: all $(UNIT_BIN) $(IT_BIN) $(FAULT_BIN) $(BENCH_BIN) $(if $(FUZZ_RT),$(FUZZ_BIN))

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

# Made again when the Makefile changes: its lists say what goes in.
$(LIB_RELOC): $(LIB_OBJ) Makefile
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD -r   $@")
	$(Q)$(LD) -r -o $@.tmp $(filter %.o,$^)
	$(Q)$(OBJCOPY) --localize-hidden $@.tmp $@ && rm -f $@.tmp

$(STATIC_LIB): $(LIB_RELOC)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $<

$(INT_LIB): $(LIB_OBJ) Makefile
	@mkdir -p $(@D)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $(filter %.o,$^)

$(TOOLS_LIB): $(TOOL_OBJ) Makefile
	@mkdir -p $(@D)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $(filter %.o,$^)

$(SHARED_LIB): $(LIB_RELOC)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,-soname,libwarren.so.$(SOVERSION) $(ALL_LDFLAGS) -o $@ $< $(DEP_LIBS)
	$(Q)ln -sf libwarren.so.$(VERSION) $(BUILD)/lib/libwarren.so.$(SOVERSION)
	$(Q)ln -sf libwarren.so.$(SOVERSION) $(BUILD)/lib/libwarren.so

# Each program from its folder's objects, then its archives (one
# prerequisite line per program, written by the foreach).
$(foreach p,$(PROGRAM_NAMES),$(eval $(BUILD)/bin/$(p): $(call objs,$($(p)_SRC)) \
    $(or $($(p)_LIBS),$(TOOLS_LIB) $(INT_LIB))))
$(PROGRAMS):
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(filter %.a,$^) $(DEP_LIBS) $($(@F)_LDLIBS)

# Unit tests link the internal archive (internal symbols included). A test may
# name rabbitmq-c functions to mock in WRAP_<test>.
WRAP_test_codec := malloc realloc
WRAP_test_engine := amqp_socket_open_noblock amqp_login_with_properties
WRAP_test_connect := amqp_socket_open_noblock amqp_login_with_properties amqp_channel_open \
                     amqp_confirm_select amqp_get_rpc_reply amqp_send_method
WRAP_test_client := engine_new engine_start engine_free engine_submit engine_publish engine_connected \
                    engine_blocked engine_blocked_ms engine_now engine_writable engine_ack \
                    engine_must_hold engine_hold engine_unhold engine_held_first engine_held_next
WRAP_test_params := warren_request_params warren_request_fail
WRAP_test_replycache := engine_now
WRAP_test_timelimit := engine_now engine_wake job_wrap_reply worker_dead_letter
WRAP_test_breaker := engine_now engine_wake engine_connected worker_cancel_consumer worker_consume \
                     worker_job_new worker_enqueue
WRAP_test_lane := engine_publish engine_connected engine_blocked engine_writable engine_generation \
                  engine_ack engine_reject worker_job_new worker_start_job worker_count
# test_wire records what the wire module declares, instead of declaring it.
WRAP_test_wire := amqp_exchange_declare amqp_queue_declare amqp_queue_bind
# tests/unit/fake_open.c: a broker that lets every connection in, for the
# tests that script the engine's frames.
FAKE_OPEN_WRAPS := amqp_socket_open_noblock amqp_login_with_properties amqp_channel_open \
              amqp_confirm_select amqp_channel_close amqp_connection_close
WRAP_test_engine_hold := $(FAKE_OPEN_WRAPS) amqp_simple_wait_frame_noblock
WRAP_test_engine_deliver := $(FAKE_OPEN_WRAPS) amqp_simple_wait_frame_noblock \
              amqp_simple_wait_frame amqp_bytes_malloc
# test_engine_failover scripts its brokers' opens itself, by port.
WRAP_test_engine_failover := $(FAKE_OPEN_WRAPS) amqp_simple_wait_frame_noblock
$(BUILD)/tests/unit/test_engine_hold $(BUILD)/tests/unit/test_engine_deliver \
$(BUILD)/tests/unit/test_engine_failover: $(call objs,tests/unit/fake_open.c)

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(TOOLS_LIB) $(INT_LIB)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) $(addprefix -Wl$(,)--wrap=,$(WRAP_$*)) -o $@ $(filter %.o,$^) \
	    $(filter %.a,$^) $(DEP_LIBS) -lcmocka

# A test of a program's own module links that module's objects too (before
# the archives: the rules above link every object first).
$(BUILD)/tests/unit/test_params: $(call objs,src/workers/user/params.c)
$(BUILD)/tests/unit/test_config_docs: $(call objs,src/workers/user/keys.c)
$(BUILD)/tests/unit/test_dlq_json: $(call objs,src/client/rpc-dlq/dlq_json.c src/client/rpc-dlq/dlq_letter.c)
$(BUILD)/tests/unit/test_dlq_letter: $(call objs,src/client/rpc-dlq/dlq_letter.c)
$(BUILD)/tests/integration/it_client_metrics: $(call objs,src/client/rpc-call/load.c)
$(BUILD)/tests/integration/it_prometheus: $(call objs,src/client/rpc-call/load.c)

# fault_load prints the client's resent count (issue 16) once warren.h has it.
$(BUILD)/obj/tests/fault/fault_load.o: ALL_CFLAGS += \
    $(if $(shell grep -E 'uint64_t[[:space:]]+resent;' src/rpc/warren.h),-DFAULT_HAVE_RESENT)

$(BUILD)/tests/fault/%: $(BUILD)/obj/tests/fault/%.o $(TOOLS_LIB) $(INT_LIB)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DEP_LIBS) -lpq

$(BUILD)/tests/bench/%: $(BUILD)/obj/tests/bench/%.o $(BENCH_LIB_OBJ) $(TOOLS_LIB) $(INT_LIB)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DEP_LIBS)

$(BUILD)/tests/integration/%: $(BUILD)/obj/tests/integration/%.o $(TEST_LIB_OBJ) $(TOOLS_LIB) $(INT_LIB)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(filter %.a,$^) $(DEP_LIBS) -lpq -lcmocka

, := ,

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CLANG   $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $(FUZZ_OBJ)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $@ $^ $(DEP_LIBS)

# Keep test objects: they are intermediate files of the pattern rules above.
.SECONDARY:

deps:
	$(Q)scripts/deps.sh

check-unit: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)scripts/run-tests.sh unit $(BUILD)

check-integration: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)scripts/run-tests.sh integration $(BUILD)

check: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)scripts/run-tests.sh all $(BUILD)

# The fault-injection kit at full length (make check runs a short version).
check-faults: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)scripts/run-tests.sh faults $(BUILD)

# Each fuzzer for FUZZ_SECONDS from a copy of its seeds in $(FUZZ_DIR)/corpus,
# which grows from run to run; crashes are saved in $(FUZZ_DIR)/crashes.
fuzz: deps
	@test -n "$(FUZZ_RT)" || { echo "make fuzz: needs clang and libFuzzer:" \
	    "apt-get install clang libclang-rt-14-dev" >&2; exit 1; }
	$(Q)$(MAKE) --no-print-directory $(FUZZ_BIN)
	$(Q)tests/fuzz/fuzz.sh $(FUZZ_DIR) $(FUZZ_SECONDS)

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/demo.sh $(BUILD)

# Takes under five minutes; BENCH_MS (per run), BENCH_FULL=1 (the whole
# transient matrix too) and BENCH_PREFETCH tune it (tests/bench/bench.sh).
bench: deps
	$(Q)$(MAKE) --no-print-directory all $(BENCH_BIN)
	$(Q)tests/bench/bench.sh $(BUILD)

# The version taken from warren.h, for scripts and tests.
version:
	@echo $(VERSION)

# The source lists, one a line (test_lib_sources.sh).
sources:
	@echo "lib $(LIB_SRC)"
	@echo "tool $(TOOL_SRC)"
	@$(foreach p,$(PROGRAM_NAMES),echo "prog $(p) $($(p)_SRC)";)

style:
	clang-format -i $(wildcard src/*/*.[ch] src/*/*/*.[ch] tests/*/*.[ch])

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/warren
	install -m 755 $(BUILD)/bin/rpc-call $(BUILD)/bin/rpc-dlq $(BUILD)/bin/warren-key \
		$(DESTDIR)$(BINDIR)/
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(LIBDIR)/
	ln -sf libwarren.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libwarren.so.$(SOVERSION)
	ln -sf libwarren.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libwarren.so
	install -m 644 src/rpc/warren.h $(DESTDIR)$(INCLUDEDIR)/warren/warren.h
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig
	sed $(PC_VARS) config/warren.pc.in >$(DESTDIR)$(LIBDIR)/pkgconfig/warren.pc
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/warren.pc
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/warren \
	           $(DESTDIR)$(DATADIR)/warren
	install -m 755 $(BUILD)/bin/user-service $(DESTDIR)$(SBINDIR)/
	for p in $(MAN_PAGES); do d=$(DESTDIR)$(MANDIR)/man$${p##*.}; \
	    install -d $$d && install -m 644 $$p $$d/ || exit 1; done
	for f in $(CONF_FILES); do t=$(DESTDIR)$(SYSCONFDIR)/warren/$${f##*/}; \
	    test -e $$t || install -m 644 $$f $$t || exit 1; done
	for u in $(UNIT_FILES); do t=$(DESTDIR)$(UNITDIR)/$${u##*/}; \
	    sed $(UNIT_PATHS) $$u >$$t && chmod 644 $$t || exit 1; done
	install -m 644 rabbitmq/definitions.json $(DESTDIR)$(DATADIR)/warren/
	install -d $(DESTDIR)$(DATADIR)/bash-completion/completions
	install -m 644 config/rpc-call.bash $(DESTDIR)$(DATADIR)/bash-completion/completions/rpc-call
	install -m 644 config/rpc-call.bash $(DESTDIR)$(DATADIR)/bash-completion/completions/rpc-dlq

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/rpc-call $(DESTDIR)$(BINDIR)/rpc-dlq $(DESTDIR)$(BINDIR)/warren-key \
	      $(DESTDIR)$(LIBDIR)/libwarren.a \
	      $(DESTDIR)$(LIBDIR)/libwarren.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libwarren.so.$(SOVERSION) \
	      $(DESTDIR)$(LIBDIR)/libwarren.so $(DESTDIR)$(INCLUDEDIR)/warren/warren.h \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/warren.pc
	-rmdir $(DESTDIR)$(INCLUDEDIR)/warren
	rm -f $(DESTDIR)$(SBINDIR)/user-service
	for p in $(MAN_PAGES); do rm -f $(DESTDIR)$(MANDIR)/man$${p##*.}/$${p##*/}; done
	for f in $(CONF_FILES); do t=$(DESTDIR)$(SYSCONFDIR)/warren/$${f##*/}; \
	    if cmp -s $$f $$t; then rm -f $$t; fi; done
	rm -f $(foreach u,$(UNIT_FILES),$(DESTDIR)$(UNITDIR)/$(notdir $(u)))
	rm -f $(DESTDIR)$(DATADIR)/warren/definitions.json
	rm -f $(DESTDIR)$(DATADIR)/bash-completion/completions/rpc-call \
	      $(DESTDIR)$(DATADIR)/bash-completion/completions/rpc-dlq
	-rmdir $(DESTDIR)$(SYSCONFDIR)/warren $(DESTDIR)$(DATADIR)/warren

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)
