// SPDX-License-Identifier: MIT
#include <debra/client.h>

#include <gnutls/crypto.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "client/protocol_session.h"
#include "net/event_loop.h"
#include "quic/client_endpoint.h"
#include "util/log.h"
#include "wire/codec.h"

namespace debra {

std::string_view to_string(SendStatus status) {
  switch (status) {
    case SendStatus::Accepted: return "accepted";
    case SendStatus::RecipientOffline: return "recipient offline";
    case SendStatus::Rejected: return "rejected";
    case SendStatus::NotConnected: return "not connected";
    case SendStatus::InvalidArgument: return "invalid argument";
  }
  return "unknown";
}

namespace {

SendResult make_result(SendStatus status, std::uint64_t message_id, std::string reason,
                       wire::ErrorCode code = wire::ErrorCode::NoError) {
  return SendResult{status, message_id, static_cast<std::uint16_t>(code), std::move(reason)};
}

// A message id that no earlier run of this client used: random high bits, a counter below.
std::uint64_t first_message_id() {
  std::uint64_t seed = 0;
  gnutls_rnd(GNUTLS_RND_NONCE, &seed, sizeof seed);
  return (seed & 0xffff'ffffULL) << 32;
}

}  // namespace

// Client::Impl: the client's state, owned by its loop thread. Members under mutex_ are shared with
// the caller's threads; everything else is touched on the loop thread only.
class Client::Impl final : public quic::ConnectionHandler {
 public:
  explicit Impl(ClientOptions options)
      : options_(std::move(options)),
        next_message_id_(first_message_id()),
        session_(options_.id, options_.protocol, options_.token) {}

  Result<void, Error> start() {
    auto transport = client::make_client_transport(options_);
    if (!transport) return Unexpected{transport.error()};
    transport_.emplace(std::move(*transport));

    // Before the thread starts: the hook list is the loop thread's once it runs.
    ack_hook_ = loop_.add_before_sleep_on_request([this] {
      if (endpoint_ != nullptr && endpoint_->connection() != nullptr) session_.flush_acks(*endpoint_->connection());
    });
    thread_ = std::thread([this] { loop_.run(); });
    loop_.post([this] { open_connection(); });
    std::unique_lock lock(mutex_);
    bool done = state_cv_.wait_for(lock, options_.connect_timeout + std::chrono::milliseconds(500),
                                   [this] { return registered_ || failed_; });
    if (registered_) return {};
    std::string reason = done ? last_reason_ : "timed out connecting to " + options_.server;
    lock.unlock();
    close();
    return make_error(reason);
  }

  ~Impl() override { close(); }

  std::future<SendResult> send(std::int32_t recipient, std::span<const std::uint8_t> payload, SendOptions send_options) {
    std::promise<SendResult> promise;
    auto future = promise.get_future();
    std::uint64_t message_id = send_options.message_id != 0
                                   ? send_options.message_id
                                   : next_message_id_.fetch_add(1, std::memory_order_relaxed);
    bool receipt = static_cast<bool>(send_options.on_receipt) && options_.protocol == Protocol::Native;
    if (recipient < 1) {
      promise.set_value(make_result(SendStatus::InvalidArgument, message_id,
                                    "recipient id " + std::to_string(recipient) + " is outside 1..2147483647"));
      return future;
    }
    // Encoded here, on the caller's thread, so the loop thread only queues bytes.
    auto frame = std::make_shared<const std::vector<std::uint8_t>>(wire::encode_client_to_client(
        options_.id, recipient, options_.protocol == Protocol::Native ? message_id : 0, payload, receipt));
    if (frame->size() - wire::kLengthPrefixSize > max_frame_size()) {
      promise.set_value(make_result(SendStatus::InvalidArgument, message_id,
                                    "payload of " + std::to_string(payload.size()) + " bytes makes a frame of " +
                                        std::to_string(frame->size() - wire::kLengthPrefixSize) +
                                        " bytes; the router's maximum is " + std::to_string(max_frame_size())));
      return future;
    }
    {
      std::lock_guard lock(mutex_);
      if (closed_) {
        promise.set_value(make_result(SendStatus::NotConnected, message_id, "the client is closed"));
        return future;
      }
    }
    // std::function needs a copyable callable, and a promise is move-only.
    auto shared_promise = std::make_shared<std::promise<SendResult>>(std::move(promise));
    loop_.post([this, message_id, frame = std::move(frame), shared_promise,
                on_receipt = std::move(send_options.on_receipt), receipt]() mutable {
      auto& reply = *shared_promise;
      if (receipt) receipt_handlers_[message_id] = std::move(on_receipt);
      if (!registered_on_loop_ || endpoint_ == nullptr || endpoint_->connection() == nullptr) {
        reply.set_value(make_result(SendStatus::NotConnected, message_id,
                                      "not connected" + (last_reason_loop_.empty() ? "" : ": " + last_reason_loop_)));
        return;
      }
      session_.write(*endpoint_->connection(), *frame);
      if (options_.protocol == Protocol::Legacy) {
        reply.set_value(make_result(SendStatus::Accepted, message_id, {}));
      } else {
        pending_.emplace(message_id, std::move(reply));
      }
    });
    return future;
  }

  std::optional<Message> receive(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!received_cv_.wait_for(lock, timeout, [this] { return !received_.empty() || closed_; })) return std::nullopt;
    if (received_.empty()) return std::nullopt;
    Message message = std::move(received_.front());
    received_.pop_front();
    lock.unlock();
    if (options_.auto_acknowledge) acknowledge(message);
    return message;
  }

  void acknowledge(const Message& message) {
    if (options_.protocol != Protocol::Native || message.sequence == 0) return;
    std::uint64_t sequence = message.sequence;
    loop_.post([this, sequence] {
      // Sequences are the router's, not the connection's: an acknowledgement sent after a reconnect
      // still removes the message. One that cannot be sent now only costs a redelivery.
      if (!registered_on_loop_ || endpoint_ == nullptr) return;
      if (auto* c = endpoint_->connection()) acknowledge_on_loop(*c, sequence);
    });
  }

  // Loop thread. A batched acknowledgement goes out before the loop sleeps, with the others of this
  // iteration.
  void acknowledge_on_loop(quic::Connection& connection, std::uint64_t sequence) {
    if (session_.acknowledge(connection, sequence)) loop_.request_before_sleep(ack_hook_);
  }

  void set_message_handler(std::function<void(Message)> handler) {
    std::lock_guard lock(mutex_);
    message_handler_ = std::move(handler);
  }

  void set_connection_handler(std::function<void(bool, const std::string&)> handler) {
    std::lock_guard lock(mutex_);
    connection_handler_ = std::move(handler);
  }

  void close() {
    {
      std::lock_guard lock(mutex_);
      if (closed_) return;
      closed_ = true;
    }
    received_cv_.notify_all();
    if (!thread_.joinable()) return;
    loop_.post([this] {
      closing_ = true;
      if (reconnect_timer_ != 0) loop_.cancel_timer(reconnect_timer_);
      if (endpoint_ != nullptr && endpoint_->connection() != nullptr) {
        // Acknowledgements batched in this iteration go before the close, which waits until what was
        // written is acknowledged.
        session_.flush_acks(*endpoint_->connection());
        endpoint_->connection()->close(static_cast<std::uint64_t>(wire::ErrorCode::NoError), "client closing");
        // Done once our CONNECTION_CLOSE is out (after queued data was acknowledged): the closing
        // period only matters to a peer that keeps sending, and the router will not. Bounded, in
        // case the router is gone.
        wait_for_close(loop_.now() + 3 * quic::kSecond);
      } else {
        loop_.stop();
      }
    });
    thread_.join();
    endpoint_.reset();
  }

  bool connected() const {
    std::lock_guard lock(mutex_);
    return registered_ && !closed_;
  }

  std::uint32_t max_frame_size() const { return max_frame_size_.load(std::memory_order_relaxed); }

  std::string last_disconnect_reason() const {
    std::lock_guard lock(mutex_);
    return last_reason_;
  }

  // quic::ConnectionHandler, on the loop thread.
  void on_handshake_completed() override {
    quic::Connection* connection = endpoint_->connection();
    if (auto started = session_.start(*connection); !started) {
      connection->close_now(static_cast<std::uint64_t>(wire::ErrorCode::InternalError), started.error().message);
      return;
    }
    // Legacy mode has no Welcome: the registration is as confirmed as it will ever be.
    if (options_.protocol == Protocol::Legacy) set_registered();
  }

  void on_stream_data(quic::StreamId id, std::span<const std::uint8_t> data, bool) override {
    if (auto failure = session_.on_stream_data(id, data, [this](const wire::Message& m) { handle(m); })) {
      protocol_failure(*failure);
    }
  }

  void on_closed(const quic::CloseInfo& info) override {
    std::string reason = info.to_string();
    if (!server_error_.empty()) reason = server_error_;
    bool was_registered = registered_on_loop_;
    registered_on_loop_ = false;
    session_.reset();
    server_error_.clear();
    for (auto& [id, promise] : pending_) {
      promise.set_value(make_result(SendStatus::NotConnected, id, "connection lost before the reply: " + reason));
    }
    pending_.clear();
    // The endpoint is still on the stack: destroy it once this call has returned.
    loop_.post([old = std::shared_ptr<quic::ClientEndpoint>(std::move(endpoint_))] {});
    last_reason_loop_ = reason;
    std::function<void(bool, const std::string&)> handler;
    {
      std::lock_guard lock(mutex_);
      // A reconnect attempt that fails is not a lost connection: the reason stays why the last
      // registered one ended (ServerShutdown, say), not the refusal of the attempt after it.
      if (was_registered || !ever_registered_) last_reason_ = reason;
      registered_ = false;
      if (!ever_registered_) failed_ = true;
      handler = connection_handler_;
    }
    state_cv_.notify_all();
    if (was_registered && handler) handler(false, reason);
    if (closing_) {
      loop_.stop();
      return;
    }
    bool displaced = info.application && info.error_code == static_cast<std::uint64_t>(wire::ErrorCode::SessionTakenOver);
    // Reconnecting would be refused again: the same id, the same token.
    bool refused = info.application && (info.error_code == static_cast<std::uint64_t>(wire::ErrorCode::InvalidId) ||
                                        info.error_code == static_cast<std::uint64_t>(wire::ErrorCode::ProtocolError) ||
                                        info.error_code == static_cast<std::uint64_t>(wire::ErrorCode::Unauthenticated));
    if (ever_registered_ && options_.reconnect && !displaced && !refused) schedule_reconnect();
  }

 private:
  void open_connection() {
    auto endpoint = quic::ClientEndpoint::connect(loop_, transport_->server, transport_->tls, transport_->settings, *this);
    if (!endpoint) {
      fail_attempt(endpoint.error().message);
      return;
    }
    endpoint_ = std::move(*endpoint);
    attempt_ += 1;
    std::uint64_t attempt = attempt_;
    loop_.add_timer(loop_.now() + static_cast<std::uint64_t>(options_.connect_timeout.count()) * quic::kMillisecond,
                    [this, attempt] {
                      if (attempt != attempt_ || registered_on_loop_ || endpoint_ == nullptr) return;
                      if (auto* connection = endpoint_->connection()) {
                        server_error_ = "timed out connecting to " + options_.server;
                        connection->close_now(static_cast<std::uint64_t>(wire::ErrorCode::NoError), "timeout");
                      }
                    });
  }

  void wait_for_close(net::Timestamp deadline) {
    quic::Connection* connection = endpoint_ != nullptr ? endpoint_->connection() : nullptr;
    if (connection == nullptr || connection->state() != quic::Connection::State::Open ||
        loop_.now() >= deadline) {
      loop_.stop();
      return;
    }
    loop_.add_timer(loop_.now() + quic::kMillisecond, [this, deadline] { wait_for_close(deadline); });
  }

  void fail_attempt(const std::string& reason) {
    last_reason_loop_ = reason;
    {
      std::lock_guard lock(mutex_);
      if (!ever_registered_) {
        last_reason_ = reason;
        failed_ = true;
      }
    }
    state_cv_.notify_all();
    if (ever_registered_ && options_.reconnect && !closing_) schedule_reconnect();
  }

  void schedule_reconnect() {
    std::chrono::milliseconds delay =
        std::min<std::chrono::milliseconds>(options_.reconnect_max_delay,
                                            options_.reconnect_initial_delay * (1LL << std::min(backoff_step_, 16)));
    ++backoff_step_;
    // Half the delay plus up to another half at random, so clients cut off together do not return
    // together.
    std::uniform_int_distribution<long long> jitter(0, delay.count() / 2);
    auto wait = delay.count() / 2 + jitter(rng_);
    reconnect_timer_ = loop_.add_timer(loop_.now() + static_cast<std::uint64_t>(wait) * quic::kMillisecond, [this] {
      reconnect_timer_ = 0;
      if (!closing_) open_connection();
    });
  }

  void set_registered() {
    registered_on_loop_ = true;
    backoff_step_ = 0;
    std::function<void(bool, const std::string&)> handler;
    bool again;
    {
      std::lock_guard lock(mutex_);
      again = ever_registered_;
      registered_ = true;
      ever_registered_ = true;
      handler = connection_handler_;
    }
    state_cv_.notify_all();
    if (again && handler) handler(true, {});
  }

  void handle(const wire::Message& message) {
    switch (message.type) {
      case wire::MessageType::Welcome:
        if (message.max_frame_size != 0) max_frame_size_.store(message.max_frame_size, std::memory_order_relaxed);
        set_registered();
        return;
      case wire::MessageType::Reply: {
        SendStatus status = message.status == wire::DeliveryStatus::Accepted           ? SendStatus::Accepted
                            : message.status == wire::DeliveryStatus::RecipientOffline ? SendStatus::RecipientOffline
                                                                                       : SendStatus::Rejected;
        // A batched Reply (message_ids) answers each of its messages alike.
        settle(message.message_id, status, message);
        for (std::size_t i = 0; i < message.message_ids.size(); ++i) settle(message.message_ids[i], status, message);
        return;
      }
      case wire::MessageType::Error:
        server_error_ = "router closed the connection: " + std::string(wire::to_string(message.error_code)) + ": " +
                        std::string(message.reason);
        return;
      case wire::MessageType::ClientToClient: {
        Message received{message.client_id, message.message_id, message.sequence,
                         std::vector<std::uint8_t>(message.payload.begin(), message.payload.end())};
        std::function<void(Message)> handler;
        {
          std::lock_guard lock(mutex_);
          handler = message_handler_;
          if (!handler) received_.push_back(std::move(received));
        }
        if (handler) {
          std::uint64_t sequence = received.sequence;
          handler(std::move(received));
          if (options_.auto_acknowledge && options_.protocol == Protocol::Native && sequence != 0) {
            acknowledge_on_loop(*endpoint_->connection(), sequence);
          }
        } else {
          received_cv_.notify_one();
        }
        return;
      }
      case wire::MessageType::Receipt: {
        auto it = receipt_handlers_.find(message.message_id);
        if (it == receipt_handlers_.end()) return;
        auto handler = std::move(it->second);
        receipt_handlers_.erase(it);
        handler(Receipt{message.message_id, message.for_client, message.status == wire::DeliveryStatus::Delivered});
        return;
      }
      default:
        spdlog::debug("client: ignoring message type {}", static_cast<int>(message.type));
        return;
    }
  }

  void settle(std::uint64_t message_id, SendStatus status, const wire::Message& reply) {
    auto it = pending_.find(message_id);
    if (it == pending_.end()) return;
    SendResult result = make_result(status, message_id, std::string(reply.reason), reply.error_code);
    result.retry_after = std::chrono::milliseconds(reply.retry_after_ms);
    it->second.set_value(std::move(result));
    pending_.erase(it);
  }

  void protocol_failure(const std::string& reason) {
    server_error_ = "bad data from the router: " + reason;
    if (auto* connection = endpoint_->connection()) {
      connection->close_now(static_cast<std::uint64_t>(wire::ErrorCode::ProtocolError), reason);
    }
  }

  ClientOptions options_;
  std::optional<client::ClientTransport> transport_;
  net::EventLoop loop_;
  std::thread thread_;
  std::atomic<std::uint64_t> next_message_id_;
  std::atomic<std::uint32_t> max_frame_size_{wire::kDefaultMaxFrameSize};

  // Loop thread only.
  std::unique_ptr<quic::ClientEndpoint> endpoint_;
  client::ProtocolSession session_;
  std::unordered_map<std::uint64_t, std::promise<SendResult>> pending_;
  // Receipts outlive a reconnect: the router sends them to whichever connection holds our id.
  std::unordered_map<std::uint64_t, std::function<void(const Receipt&)>> receipt_handlers_;
  bool registered_on_loop_ = false;
  bool closing_ = false;
  std::string server_error_;
  std::string last_reason_loop_;
  std::uint64_t attempt_ = 0;
  int backoff_step_ = 0;
  net::EventLoop::TimerId reconnect_timer_ = 0;
  std::uint64_t ack_hook_ = 0;  // writes the acknowledgements of an iteration as one frame
  std::minstd_rand rng_{std::random_device{}()};

  // Shared with callers, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable state_cv_;
  std::condition_variable received_cv_;
  std::deque<Message> received_;
  std::function<void(Message)> message_handler_;
  std::function<void(bool, const std::string&)> connection_handler_;
  std::string last_reason_;
  bool registered_ = false;
  bool ever_registered_ = false;
  bool failed_ = false;
  bool closed_ = false;
};

Result<std::unique_ptr<Client>, Error> Client::connect(ClientOptions options) {
  if (options.id < 1) return make_error("client id " + std::to_string(options.id) + " is outside 1..2147483647");
  auto impl = std::make_unique<Impl>(std::move(options));
  if (auto started = impl->start(); !started) return Unexpected{started.error()};
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

std::future<SendResult> Client::send(std::int32_t recipient, std::span<const std::uint8_t> payload,
                                     SendOptions options) {
  return impl_->send(recipient, payload, std::move(options));
}
void Client::acknowledge(const Message& message) { impl_->acknowledge(message); }
std::optional<Message> Client::receive(std::chrono::milliseconds timeout) { return impl_->receive(timeout); }
void Client::set_message_handler(std::function<void(Message)> handler) {
  impl_->set_message_handler(std::move(handler));
}
void Client::set_connection_handler(std::function<void(bool, const std::string&)> handler) {
  impl_->set_connection_handler(std::move(handler));
}
void Client::close() { impl_->close(); }
bool Client::connected() const { return impl_->connected(); }
std::uint32_t Client::max_frame_size() const { return impl_->max_frame_size(); }
std::string Client::last_disconnect_reason() const { return impl_->last_disconnect_reason(); }

}  // namespace debra
