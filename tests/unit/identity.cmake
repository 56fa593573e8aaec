# Unit tests of callers and API keys: the token format, role names and
# hashing (server/access/identity.c), and the instants `monitord admin` parses.
mon_add_unit_test(NAME test_identity_token
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_identity_token.c ${CMAKE_SOURCE_DIR}/server/access/identity.c
    ${CMAKE_SOURCE_DIR}/server/common/parse.c
  LIBS mon_db mon_proto mon_util PkgConfig::SODIUM PkgConfig::PROTOBUFC Threads::Threads)
target_include_directories(test_identity_token PRIVATE ${CMAKE_SOURCE_DIR}/server)
mon_add_unit_test(NAME test_identity_admin_time
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_identity_admin_time.c ${CMAKE_SOURCE_DIR}/server/admin.c
          ${CMAKE_SOURCE_DIR}/server/access/identity.c ${CMAKE_SOURCE_DIR}/server/config.c
          ${CMAKE_SOURCE_DIR}/server/common/parse.c
  LIBS mon_db mon_crypto mon_proto mon_util PkgConfig::SODIUM PkgConfig::JANSSON PkgConfig::PROTOBUFC Threads::Threads)
target_include_directories(test_identity_admin_time PRIVATE ${CMAKE_SOURCE_DIR}/server)
target_compile_definitions(test_identity_admin_time PRIVATE MON_VERSION="${PROJECT_VERSION}")
