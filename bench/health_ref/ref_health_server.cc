// Reference server for the health-check benchmark: gRPC C++'s default
// health service (grpc.health.v1.Health) on a synchronous server with
// default settings, listening insecure on loopback. Nothing is tuned: this
// is what a user of the official C++ stack gets, set up as gRPC's own
// greeter_server example does it.
//
// Why the Greeter is here: in gRPC 1.51 the default health service is a
// callback service that the server adds only at Start(), after
// ServerBuilder::BuildAndStart() has checked for a polled completion queue;
// a builder with no service of its own therefore fails ("At least one of
// the completion queues must be frequently polled"). Any real user registers
// their own service, so this one registers the example sync service. The
// benchmark never calls it.
//
// Usage: ref_health_server [HOST:PORT]   (default 127.0.0.1:0)
// Prints the bound port on stdout once listening; stops on SIGINT/SIGTERM.

#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <pthread.h>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "grpc/examples/helloworld.grpc.pb.h"

namespace {

class GreeterService final : public helloworld::Greeter::Service {
  grpc::Status SayHello(grpc::ServerContext *, const helloworld::HelloRequest *request,
                        helloworld::HelloReply *reply) override {
    reply->set_message("Hello " + request->name());
    return grpc::Status::OK;
  }
};

}  // namespace

int main(int argc, char **argv) {
  std::string addr = argc > 1 ? argv[1] : "127.0.0.1:0";

  // Block the stop signals before gRPC starts its threads, so that only the
  // waiter below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  grpc::EnableDefaultHealthCheckService(true);

  GreeterService greeter;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&greeter);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "ref_health_server: could not listen on \"%s\"\n", addr.c_str());
    return 1;
  }
  std::printf("%d\n", port);
  std::fflush(stdout);

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    server->Shutdown();
  });
  server->Wait();
  waiter.join();
  return 0;
}
