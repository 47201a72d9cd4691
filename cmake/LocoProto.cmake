# loco_proto_library(target proto_file [MESSAGES_ONLY]): C++ messages and gRPC stubs of one .proto
# file, generated with protoc and grpc_cpp_plugin into one library that both sides link.
# MESSAGES_ONLY: the messages alone, linking protobuf but not gRPC (proto/tensorboard.proto).
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_program(LOCO_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

function(loco_proto_library target proto)
  cmake_parse_arguments(arg "MESSAGES_ONLY" "" "" ${ARGN})
  get_filename_component(name ${proto} NAME_WE)
  get_filename_component(dir ${proto} DIRECTORY)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/proto)
  set(srcs ${out}/${name}.pb.cc)
  set(hdrs ${out}/${name}.pb.h)
  set(grpc_args)
  set(grpc_libs)
  if(NOT arg_MESSAGES_ONLY)
    list(APPEND srcs ${out}/${name}.grpc.pb.cc)
    list(APPEND hdrs ${out}/${name}.grpc.pb.h)
    set(grpc_args --grpc_out=${out} --plugin=protoc-gen-grpc=${LOCO_GRPC_CPP_PLUGIN})
    set(grpc_libs gRPC::grpc++ gRPC::grpc++_reflection)
  endif()
  add_custom_command(
    OUTPUT ${srcs} ${hdrs}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
    COMMAND protobuf::protoc --proto_path=${dir} --cpp_out=${out} ${grpc_args} ${proto}
    DEPENDS ${proto}
    COMMENT "protoc: ${name}.proto")
  add_library(${target} STATIC ${srcs})
  target_include_directories(${target} SYSTEM PUBLIC ${out})
  # ${Protobuf_LIBRARIES} too: a CUDA LibTorch's CMake may define protobuf::libprotobuf first, empty.
  target_link_libraries(${target} PUBLIC ${grpc_libs} protobuf::libprotobuf ${Protobuf_LIBRARIES})
  target_compile_features(${target} PUBLIC cxx_std_17)
endfunction()
