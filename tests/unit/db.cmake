# Unit tests of the data layer's pure logic (no server).
mon_add_unit_test(NAME test_db_copy_escape SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_db_copy_escape.c LIBS mon_db)
mon_add_unit_test(NAME test_db_sqlstate SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_db_sqlstate.c LIBS mon_db)
