# Tests of the client side: the RPC runtime's client (test_client_rpc) and
# libmonitoring's public API (test_client_lib), both against a python3-grpcio
# health server; the library's idempotency keys and retries against a fake
# AlertsService (test_client_retry); the JSON transcoder of monctl (test_client_json); monctl's
# command line against the same server (test_client_monctl); and the
# symbols libmonitoring.so exports (test_client_exports).
if(TARGET monitoring_static)
  set(mon_client_test_server ${CMAKE_CURRENT_LIST_DIR}/test_client_health_server.py)
  execute_process(COMMAND /usr/bin/python3 -c "import grpc, grpc_tools.protoc"
    RESULT_VARIABLE mon_client_has_grpcio OUTPUT_QUIET ERROR_QUIET)

  if(mon_client_has_grpcio EQUAL 0)
    mon_add_unit_test(NAME test_client_rpc SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_client_rpc.c
      LIBS monitoring_static Threads::Threads)
    target_compile_definitions(test_client_rpc PRIVATE MON_TEST_HEALTH_SERVER="${mon_client_test_server}")

    mon_add_unit_test(NAME test_client_lib SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_client_lib.c
      LIBS monitoring Threads::Threads)
    target_compile_definitions(test_client_lib PRIVATE MON_TEST_HEALTH_SERVER="${mon_client_test_server}")

    # Idempotency keys and retries against a fake AlertsService.
    mon_add_unit_test(NAME test_client_retry SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_client_retry.c
      LIBS monitoring Threads::Threads)
    target_compile_definitions(test_client_retry PRIVATE
      MON_TEST_HEALTH_SERVER="${CMAKE_CURRENT_LIST_DIR}/test_client_retry_server.py")

    if(TARGET monctl)
      add_test(NAME test_client_monctl
        COMMAND /bin/sh ${CMAKE_CURRENT_LIST_DIR}/test_client_monctl.sh $<TARGET_FILE:monctl> ${mon_client_test_server})
      set_tests_properties(test_client_monctl PROPERTIES LABELS unit TIMEOUT 120)
    endif()
  else()
    message(STATUS "python3-grpcio or python3-grpc-tools missing: client tests against a server are skipped")
  endif()

  if(TARGET monctl)
    # A test proto with a field of every kind, compiled with protoc-c.
    set(json_proto_dir ${CMAKE_CURRENT_BINARY_DIR}/client_json_proto)
    file(MAKE_DIRECTORY ${json_proto_dir})
    add_custom_command(
      OUTPUT ${json_proto_dir}/test_client_json.pb-c.c ${json_proto_dir}/test_client_json.pb-c.h
      COMMAND ${PROTOC} -I${CMAKE_CURRENT_LIST_DIR} -I/usr/include --c_out=${json_proto_dir}
              ${CMAKE_CURRENT_LIST_DIR}/test_client_json.proto
      DEPENDS ${CMAKE_CURRENT_LIST_DIR}/test_client_json.proto
      COMMENT "protoc-c test_client_json.proto")
    set_source_files_properties(${json_proto_dir}/test_client_json.pb-c.c PROPERTIES COMPILE_OPTIONS "-w")
    mon_add_unit_test(NAME test_client_json
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_client_json.c ${CMAKE_SOURCE_DIR}/clients/cli/json.c
        ${CMAKE_SOURCE_DIR}/src/util/error.c ${json_proto_dir}/test_client_json.pb-c.c
      LIBS mon_proto PkgConfig::JANSSON PkgConfig::PROTOBUFC m)
    target_include_directories(test_client_json PRIVATE ${CMAKE_SOURCE_DIR}/clients/cli ${json_proto_dir})
  endif()

  add_test(NAME test_client_exports
    COMMAND /bin/sh ${CMAKE_CURRENT_LIST_DIR}/test_client_exports.sh $<TARGET_FILE:monitoring>)
  set_tests_properties(test_client_exports PROPERTIES LABELS unit TIMEOUT 60)
endif()
