# The fuzz harnesses and what each links, in one place for both builds:
# tests/unit/fuzz.cmake (every build: a deterministic driver replays the
# corpus in tests/fuzz/corpus/<harness>/ and mutations of it) and
# tests/fuzz/CMakeLists.txt (MON_FUZZ=ON with clang: libFuzzer).
#
# mon_fuzz_harness(NAME name [SOURCES code under test...] [LIBS libs...])
# records a harness tests/fuzz/<name>.c; mon_fuzz_add_target(name target
# main...) makes an executable of it with the given main (driver.c or none).
set(MON_FUZZ_HARNESSES "")
set(MON_FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR})

function(mon_fuzz_harness)
  cmake_parse_arguments(H "" "NAME" "SOURCES;LIBS" ${ARGN})
  set(MON_FUZZ_HARNESSES ${MON_FUZZ_HARNESSES} ${H_NAME} PARENT_SCOPE)
  set(MON_FUZZ_${H_NAME}_SOURCES ${H_SOURCES} PARENT_SCOPE)
  set(MON_FUZZ_${H_NAME}_LIBS ${H_LIBS} PARENT_SCOPE)
endfunction()

function(mon_fuzz_add_target name target)
  add_executable(${target} ${MON_FUZZ_DIR}/${name}.c ${MON_FUZZ_${name}_SOURCES} ${ARGN})
  target_compile_options(${target} PRIVATE ${MON_C_WARNINGS})
  target_include_directories(${target} PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/server
    ${CMAKE_SOURCE_DIR}/clients/cli ${MON_GEN_DIR})
  target_link_libraries(${target} PRIVATE ${MON_FUZZ_${name}_LIBS})
endfunction()

set(S ${CMAKE_SOURCE_DIR}/server)

# Request bytes as the RPC runtime checks and decodes them (src/rpc/validate.c, protobuf-c).
mon_fuzz_harness(NAME fuzz_request_decode LIBS mon_rpc mon_proto mon_util)
# The protobuf wire reader of the reflection index and the request string check (src/rpc/wire.c).
mon_fuzz_harness(NAME fuzz_wire LIBS mon_rpc mon_proto mon_util)
# Page tokens and key cursors (server/common/page.c).
mon_fuzz_harness(NAME fuzz_page_token
  SOURCES ${S}/common/page.c ${S}/common/call.c ${S}/common/idem.c ${S}/common/parse.c ${S}/common/text.c ${S}/audit/audit.c
  LIBS mon_rpc mon_db mon_proto mon_util PkgConfig::SODIUM PkgConfig::JANSSON)
# Watch requests and their resume cursors (server/stream/hub.c).
mon_fuzz_harness(NAME fuzz_stream_resume SOURCES ${S}/stream/hub.c LIBS mon_rpc mon_db mon_proto mon_util)
# monitord's configuration: file, flags, environment, listen address, conninfo redaction (server/config.c).
mon_fuzz_harness(NAME fuzz_config SOURCES ${S}/config.c LIBS mon_util)
# monctl's JSON <-> protobuf transcoding (clients/cli/json.c).
mon_fuzz_harness(NAME fuzz_monctl_json SOURCES ${CMAKE_SOURCE_DIR}/clients/cli/json.c
  LIBS mon_rpc mon_proto mon_util PkgConfig::JANSSON m)
# health_check_url as HealthService checks it and the prober uses it (server/health/).
mon_fuzz_harness(NAME fuzz_url
  SOURCES ${S}/health/services_api.c ${S}/health/store.c ${S}/common/json.c ${S}/common/call.c ${S}/common/idem.c ${S}/common/page.c
    ${S}/common/parse.c ${S}/common/text.c ${S}/audit/audit.c ${S}/health/netpolicy.c ${S}/health/prober.c
  LIBS mon_rpc mon_rpc_client mon_db mon_proto mon_util PkgConfig::JANSSON PkgConfig::SODIUM PkgConfig::CURL)
