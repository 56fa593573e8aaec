# Unit tests of secret sealing (src/crypto/seal.c): round trips, the
# binding to table, column, row and key version, malformed texts, key files.
mon_add_unit_test(NAME test_seal SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_seal.c LIBS mon_crypto)
