# Build rules for the code generated from .proto files: protoc-c's message
# code (.pb-c.h/.c) and protoc-gen-mon's server tables, client stubs,
# service index and descriptor set, all from one protoc run.
#
# Included by the top-level CMakeLists.txt before any subdirectory, so it
# only finds the inputs and defines functions; proto/CMakeLists.txt calls
# them. Generated code goes to the build tree only.

find_path(MON_PROTOBUF_INCLUDE_DIR google/protobuf/compiler/plugin.proto
  PATHS /usr/include /usr/local/include
  DOC "Directory holding google/protobuf/*.proto (libprotobuf-dev, libprotoc-dev)"
  REQUIRED)
find_path(MON_GRPC_PROTO_DIR grpc/health/v1/health.proto
  PATHS /usr/share/grpc-proto
  DOC "Directory holding grpc/health/v1/health.proto (grpc-proto)"
  REQUIRED)

# The well-known types. libprotobuf-c-dev ships no C code for them, so they
# are generated and compiled with the API. All of them, so that any import
# of a well-known type (and reflection on it) works without a build change.
set(MON_WELL_KNOWN_PROTOS
  google/protobuf/any.proto
  google/protobuf/api.proto
  google/protobuf/descriptor.proto
  google/protobuf/duration.proto
  google/protobuf/empty.proto
  google/protobuf/field_mask.proto
  google/protobuf/source_context.proto
  google/protobuf/struct.proto
  google/protobuf/timestamp.proto
  google/protobuf/type.proto
  google/protobuf/wrappers.proto)

# mon_proto_has_service(<file> <out-var>)
# Sets out-var to TRUE when the .proto file declares a service. The
# generated file list must be known at configure time, and protoc-gen-mon
# writes server and client files exactly for the files that declare one.
function(mon_proto_has_service file out_var)
  file(READ ${file} text)
  # Drop comments first, so that "service Foo {" in a comment does not count.
  string(REGEX REPLACE "/\\*([^*]|\\*+[^*/])*\\*+/" "" text "${text}")
  string(REGEX REPLACE "//[^\n]*" "" text "${text}")
  if(text MATCHES "(^|[;{}\n \t])service[ \t\r\n]+[A-Za-z_][A-Za-z0-9_]*[ \t\r\n]*{")
    set(${out_var} TRUE PARENT_SCOPE)
  else()
    set(${out_var} FALSE PARENT_SCOPE)
  endif()
endfunction()

# mon_proto_generate(
#   OUT_DIR <dir>                  where generated files go (keeps the proto paths)
#   IMPORT_DIRS <dir>...           protoc -I directories, in order
#   PROTOS <name>...               protos to generate, as import paths
#                                  ("monitoring/v1/alerts.proto")
#   [INDEX <stem>]                 also generate <stem>.h/.c: mon_all_services
#   [DESCRIPTOR_SET <stem>]        also generate <stem>.h/.c: mon_descriptor_set
#   [PBC_SOURCES <var>] [PBC_HEADERS <var>]         protoc-c output
#   [SERVER_SOURCES <var>] [SERVER_HEADERS <var>]   .mon-server.c/.h
#   [CLIENT_SOURCES <var>] [CLIENT_HEADERS <var>]   .mon-client.c/.h
#   [EXTRA_SOURCES <var>] [EXTRA_HEADERS <var>]     index and descriptor set
#   [PROTO_PATHS <var>])           absolute paths of PROTOS
# Adds the custom command (one protoc run driving protoc-c and
# protoc-gen-mon) and returns the output lists in the named variables.
# Editing any of the protos re-runs CMake, because which of them declare
# services decides the list of outputs.
function(mon_proto_generate)
  cmake_parse_arguments(G "" "OUT_DIR;INDEX;DESCRIPTOR_SET;PBC_SOURCES;PBC_HEADERS;SERVER_SOURCES;SERVER_HEADERS;CLIENT_SOURCES;CLIENT_HEADERS;EXTRA_SOURCES;EXTRA_HEADERS;PROTO_PATHS"
    "IMPORT_DIRS;PROTOS" ${ARGN})
  if(NOT G_OUT_DIR OR NOT G_IMPORT_DIRS OR NOT G_PROTOS)
    message(FATAL_ERROR "mon_proto_generate: OUT_DIR, IMPORT_DIRS and PROTOS are required")
  endif()

  set(paths)
  set(pbc_c)
  set(pbc_h)
  set(srv_c)
  set(srv_h)
  set(cli_c)
  set(cli_h)
  set(extra_c)
  set(extra_h)
  foreach(name IN LISTS G_PROTOS)
    set(path)
    foreach(dir IN LISTS G_IMPORT_DIRS)
      if(EXISTS ${dir}/${name})
        set(path ${dir}/${name})
        break()
      endif()
    endforeach()
    if(NOT path)
      message(FATAL_ERROR "mon_proto_generate: ${name} is in none of: ${G_IMPORT_DIRS}")
    endif()
    list(APPEND paths ${path})
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${path})

    string(REGEX REPLACE "\\.proto$" "" stem ${name})
    list(APPEND pbc_c ${G_OUT_DIR}/${stem}.pb-c.c)
    list(APPEND pbc_h ${G_OUT_DIR}/${stem}.pb-c.h)
    mon_proto_has_service(${path} has_service)
    if(has_service)
      list(APPEND srv_c ${G_OUT_DIR}/${stem}.mon-server.c)
      list(APPEND srv_h ${G_OUT_DIR}/${stem}.mon-server.h)
      list(APPEND cli_c ${G_OUT_DIR}/${stem}.mon-client.c)
      list(APPEND cli_h ${G_OUT_DIR}/${stem}.mon-client.h)
    endif()
  endforeach()

  set(mon_params)
  if(G_INDEX)
    list(APPEND mon_params "index=${G_INDEX}")
    list(APPEND extra_c ${G_OUT_DIR}/${G_INDEX}.c)
    list(APPEND extra_h ${G_OUT_DIR}/${G_INDEX}.h)
  endif()
  if(G_DESCRIPTOR_SET)
    list(APPEND mon_params "descriptor_set=${G_DESCRIPTOR_SET}")
    list(APPEND extra_c ${G_OUT_DIR}/${G_DESCRIPTOR_SET}.c)
    list(APPEND extra_h ${G_OUT_DIR}/${G_DESCRIPTOR_SET}.h)
  endif()
  list(JOIN mon_params "," mon_params)
  if(mon_params)
    set(mon_out "--mon_out=${mon_params}:${G_OUT_DIR}")
  else()
    set(mon_out "--mon_out=${G_OUT_DIR}")
  endif()

  set(import_flags)
  foreach(dir IN LISTS G_IMPORT_DIRS)
    list(APPEND import_flags "-I${dir}")
  endforeach()

  add_custom_command(
    OUTPUT ${pbc_c} ${pbc_h} ${srv_c} ${srv_h} ${cli_c} ${cli_h} ${extra_c} ${extra_h}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${G_OUT_DIR}
    COMMAND ${PROTOC} ${import_flags}
            --plugin=protoc-gen-c=${PROTOC_GEN_C} --c_out=${G_OUT_DIR}
            --plugin=protoc-gen-mon=$<TARGET_FILE:protoc-gen-mon> ${mon_out}
            ${paths}
    DEPENDS ${paths} protoc-gen-mon
    COMMENT "Generating C code from the protos (protoc-c, protoc-gen-mon)"
    VERBATIM)

  foreach(pair PBC_SOURCES:pbc_c PBC_HEADERS:pbc_h SERVER_SOURCES:srv_c SERVER_HEADERS:srv_h
               CLIENT_SOURCES:cli_c CLIENT_HEADERS:cli_h EXTRA_SOURCES:extra_c EXTRA_HEADERS:extra_h
               PROTO_PATHS:paths)
    string(REPLACE ":" ";" pair ${pair})
    list(GET pair 0 key)
    list(GET pair 1 local)
    if(G_${key})
      set(${G_${key}} ${${local}} PARENT_SCOPE)
    endif()
  endforeach()
endfunction()
