// SPDX-License-Identifier: MIT
#include "metrics/http_exporter.h"

#include <httplib.h>

#include <chrono>

namespace debra::metrics {
namespace {

// The content type of the Prometheus text format.
constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

HttpExporter::HttpExporter() : http_(std::make_unique<httplib::Server>()), page_(std::make_shared<std::string>()) {}

Result<std::unique_ptr<HttpExporter>, Error> HttpExporter::start(const std::string& host, std::uint16_t port) {
  std::unique_ptr<HttpExporter> exporter(new HttpExporter());
  HttpExporter* raw = exporter.get();
  raw->http_->Get("/metrics", [raw](const httplib::Request&, httplib::Response& response) {
    response.set_content(*raw->page(), kContentType);
  });
  // Scrapes are rare and cheap: one worker, not cpp-httplib's default pool of eight.
  raw->http_->new_task_queue = [] { return new httplib::ThreadPool(1); };
  // A scraper that stalls must not hold a thread for long.
  raw->http_->set_read_timeout(5, 0);
  raw->http_->set_write_timeout(5, 0);
  int bound = port == 0 ? raw->http_->bind_to_any_port(host) : (raw->http_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) return make_error("cannot listen for metrics on " + host + ":" + std::to_string(port));
  raw->port_ = static_cast<std::uint16_t>(bound);
  raw->thread_ = std::thread([raw] { raw->http_->listen_after_bind(); });
  // stop() only reaches a server that is already running; wait for that (bounded), so a destructor
  // right after start() cannot leave the thread serving forever.
  for (int i = 0; i < 5000 && !raw->http_->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!raw->http_->is_running()) return make_error("the metrics thread did not start on " + host);
  return exporter;
}

HttpExporter::~HttpExporter() {
  http_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpExporter::publish(std::string page) {
  auto shared = std::make_shared<const std::string>(std::move(page));
  std::lock_guard lock(mutex_);
  page_ = std::move(shared);
}

std::shared_ptr<const std::string> HttpExporter::page() const {
  std::lock_guard lock(mutex_);
  return page_;
}

}  // namespace debra::metrics
