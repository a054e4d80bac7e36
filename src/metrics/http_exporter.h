// SPDX-License-Identifier: MIT
//
// HttpExporter: serves the latest published metrics page at GET /metrics, on its own thread
// (cpp-httplib). The owner of the figures (the router's event loop) builds a page and publish()es it
// now and then; a scrape only copies the last page under a mutex, so it never waits for, or touches
// the state of, the loop thread.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "util/result.h"

namespace httplib {
class Server;
}

namespace debra::metrics {

class HttpExporter {
 public:
  // Binds host:port (port 0 picks a free one) and starts serving. Fails if the address cannot be bound.
  static Result<std::unique_ptr<HttpExporter>, Error> start(const std::string& host, std::uint16_t port);
  ~HttpExporter();  // stops the HTTP thread and waits for it
  HttpExporter(const HttpExporter&) = delete;
  HttpExporter& operator=(const HttpExporter&) = delete;

  std::uint16_t port() const { return port_; }
  // Replaces the page scrapes return. Thread-safe.
  void publish(std::string page);

 private:
  HttpExporter();
  std::shared_ptr<const std::string> page() const;

  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::uint16_t port_ = 0;
  mutable std::mutex mutex_;
  std::shared_ptr<const std::string> page_;
};

}  // namespace debra::metrics
