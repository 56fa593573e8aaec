# Banned functions, layout, and headers that compile on their own.
add_test(NAME check_source COMMAND ${CMAKE_SOURCE_DIR}/scripts/check-source.sh ${CMAKE_BINARY_DIR})
set_tests_properties(check_source PROPERTIES LABELS unit TIMEOUT 300)
