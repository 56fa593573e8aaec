# Runtime pieces with logic of their own: arena, errors, status mapping, wire reader.
mon_add_unit_test(NAME test_util_arena SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_util_arena.c LIBS mon_util)
mon_add_unit_test(NAME test_rpc_runtime SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_rpc_runtime.c LIBS mon_rpc)
mon_add_unit_test(NAME test_util_log SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_util_log.c LIBS mon_util)
# The string check every request passes before decoding (src/rpc/validate.c).
mon_add_unit_test(NAME test_rpc_validate SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_rpc_validate.c LIBS mon_rpc)
