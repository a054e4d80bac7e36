// SPDX-License-Identifier: MIT
#include "raw_client.h"

#include <ngtcp2/ngtcp2.h>

#include <future>

namespace debra::testing {
namespace {

// Far above any frame the router sends, so the raw client never refuses what the router may write.
constexpr std::uint32_t kReaderMaxFrame = 256u * 1024 * 1024;

}  // namespace

std::string RawMessage::describe() const {
  std::string text = std::string(wire::to_string(type)) + " (type " + std::to_string(static_cast<int>(type)) +
                     ") on stream " + std::to_string(stream) + ": client_id " + std::to_string(client_id) +
                     ", for_client " + std::to_string(for_client) + ", message_id " + std::to_string(message_id) +
                     ", " + std::to_string(payload.size()) + " payload bytes";
  if (type == wire::MessageType::Reply) text += ", status " + std::string(wire::to_string(status));
  if (!message_ids.empty()) text += ", " + std::to_string(message_ids.size()) + " more message ids";
  if (error_code != wire::ErrorCode::NoError) text += ", error " + std::string(wire::to_string(error_code));
  if (!reason.empty()) text += ", reason \"" + reason + "\"";
  return text;
}

RawClient::RawClient(RawClientOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<RawClient>, Error> RawClient::connect(RawClientOptions options,
                                                             std::chrono::milliseconds timeout) {
  auto address = net::Address::parse(options.server);
  if (!address) return Unexpected{address.error()};
  if (options.server_name.empty()) {
    std::string host = options.server.substr(0, options.server.rfind(':'));
    if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    options.server_name = host;
  }
  quic::TlsClientOptions tls;
  tls.ca_file = options.ca_file;
  tls.server_name = options.server_name;
  tls.alpn = options.native ? std::string(wire::kAlpn) : std::string();
  tls.cert_file = options.cert_file;
  tls.key_file = options.key_file;
  auto context = quic::TlsClientContext::create(std::move(tls));
  if (!context) return Unexpected{context.error()};

  quic::TransportSettings settings;
  settings.peer_bidi_streams = 0;
  settings.peer_uni_streams = options.native ? 64 : 0;  // the router's delivery lanes
  settings.max_udp_payload = options.max_udp_payload;

  std::unique_ptr<RawClient> client(new RawClient(std::move(options)));
  client->tls_.emplace(std::move(*context));
  RawClient* raw = client.get();
  raw->thread_ = std::thread([raw] { raw->loop_.run(); });
  raw->loop_.post([raw, server = *address, settings] {
    auto endpoint = quic::ClientEndpoint::connect(raw->loop_, server, *raw->tls_, settings, *raw);
    if (!endpoint) {
      std::lock_guard lock(raw->mutex_);
      raw->close_info_ = quic::CloseInfo{quic::CloseInfo::Initiator::Local, false, 0, endpoint.error().message};
      raw->cv_.notify_all();
      return;
    }
    raw->endpoint_ = std::move(*endpoint);
  });
  std::unique_lock lock(raw->mutex_);
  bool done = raw->cv_.wait_for(lock, timeout, [raw] { return raw->stream_ >= 0 || raw->close_info_.has_value(); });
  if (raw->stream_ >= 0) return client;
  std::string reason = done ? raw->close_info_->to_string() : "timed out connecting to " + raw->options_.server;
  return make_error(reason);
}

RawClient::~RawClient() {
  if (thread_.joinable()) {
    loop_.post([this] {
      if (endpoint_ != nullptr) {
        if (auto* connection = endpoint_->connection(); connection != nullptr &&
                                                       connection->state() == quic::Connection::State::Open) {
          connection->close_now(static_cast<std::uint64_t>(wire::ErrorCode::NoError), "test client done");
          connection->flush(loop_.now());  // sends the CONNECTION_CLOSE now: the loop stops next
        }
      }
      loop_.stop();
    });
    thread_.join();
  }
  endpoint_.reset();
}

void RawClient::send(std::vector<std::uint8_t> bytes) {
  loop_.post([this, bytes = std::move(bytes)]() mutable {
    if (endpoint_ == nullptr || endpoint_->connection() == nullptr) return;
    endpoint_->connection()->write(stream_, bytes);
  });
}

void RawClient::finish() {
  loop_.post([this] {
    if (finish_requested_) return;
    finish_requested_ = true;
    // Checked before every sleep: the FIN goes out once the router has acknowledged every byte
    // written before it, so no stream data can follow it.
    finish_hook_ = loop_.add_before_sleep([this] { try_finish(); });
  });
}

void RawClient::try_finish() {
  if (!finish_requested_ || finish_sent_ || endpoint_ == nullptr) return;
  quic::Connection* connection = endpoint_->connection();
  if (connection == nullptr || connection->state() != quic::Connection::State::Open) return;
  if (connection->queued_bytes() != 0) return;
  // quic::Connection cannot end a stream, so write the FIN (an empty STREAM frame at the final
  // offset) directly: ngtcp2 knows the offset and retransmits the frame itself if it is lost.
  ngtcp2_conn* conn = connection->native();
  std::vector<std::uint8_t> packet(ngtcp2_conn_get_path_max_tx_udp_payload_size(conn));
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info info{};
  ngtcp2_ssize consumed = -1;
  net::Timestamp now = loop_.now();
  ngtcp2_ssize n = ngtcp2_conn_writev_stream(conn, &ps.path, &info, packet.data(), packet.size(), &consumed,
                                             NGTCP2_WRITE_STREAM_FLAG_FIN, stream_, nullptr, 0, now);
  if (n < 0) {
    finish_sent_ = true;  // give up; the test sees no FIN-related close
    std::lock_guard lock(mutex_);
    receive_errors_.push_back(std::string("cannot write the FIN: ") + ngtcp2_strerror(static_cast<int>(n)));
    return;
  }
  if (n > 0) {
    endpoint_->send_packets(connection->remote_address(), connection->remote_address(),
                            std::span<const std::uint8_t>(packet.data(), static_cast<std::size_t>(n)),
                            static_cast<std::size_t>(n));
    ngtcp2_conn_update_pkt_tx_time(conn, now);
  }
  if (consumed >= 0) {
    finish_sent_ = true;
  } else {
    // Pacing or congestion held it back: wake up soon to try again.
    loop_.add_timer(now + quic::kMillisecond, [] {});
  }
  connection->flush(now);  // re-arms the connection's timers after our write
}

::testing::AssertionResult RawClient::register_id(std::int32_t id, std::chrono::milliseconds timeout) {
  send(wire::encode_registration(id, {}, options_.features));
  if (!options_.native) return ::testing::AssertionSuccess();
  auto welcome = next_message(timeout);
  if (!welcome) return ::testing::AssertionFailure() << "no Welcome for id " << id;
  if (welcome->type != wire::MessageType::Welcome || welcome->client_id != id) {
    return ::testing::AssertionFailure() << "expected a Welcome for id " << id << ", got " << welcome->describe();
  }
  return ::testing::AssertionSuccess();
}

std::optional<RawMessage> RawClient::next_message(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!cv_.wait_for(lock, timeout, [this] { return !messages_.empty(); })) return std::nullopt;
  RawMessage message = std::move(messages_.front());
  messages_.pop_front();
  return message;
}

std::optional<RawMessage> RawClient::wait_for(wire::MessageType type, std::chrono::milliseconds timeout,
                                              std::vector<RawMessage>* skipped) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    auto message = next_message(std::max(left, std::chrono::milliseconds(0)));
    if (!message) return std::nullopt;
    if (message->type == type) return message;
    if (skipped != nullptr) skipped->push_back(std::move(*message));
  }
}

std::optional<quic::CloseInfo> RawClient::wait_closed(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!cv_.wait_for(lock, timeout, [this] { return close_info_.has_value(); })) return std::nullopt;
  return close_info_;
}

bool RawClient::closed() const {
  std::lock_guard lock(mutex_);
  return close_info_.has_value();
}

std::string RawClient::alpn() const {
  std::lock_guard lock(mutex_);
  return alpn_;
}

bool RawClient::retried() const {
  std::lock_guard lock(mutex_);
  return retried_;
}

RawClient::StreamLimits RawClient::stream_limits() const {
  std::lock_guard lock(mutex_);
  return stream_limits_;
}

std::optional<int> RawClient::drive_ngtcp2(std::function<int(ngtcp2_conn*, net::Timestamp)> call,
                                           std::chrono::milliseconds timeout) {
  auto result = std::make_shared<std::promise<std::optional<int>>>();
  std::future<std::optional<int>> answer = result->get_future();
  loop_.post([this, call = std::move(call), result] {
    quic::Connection* connection = endpoint_ != nullptr ? endpoint_->connection() : nullptr;
    if (connection == nullptr || connection->state() != quic::Connection::State::Open) {
      result->set_value(std::nullopt);
      return;
    }
    net::Timestamp now = loop_.now();
    int rv = call(connection->native(), now);
    connection->flush(now);
    result->set_value(rv);
  });
  if (answer.wait_for(timeout) != std::future_status::ready) return std::nullopt;
  return answer.get();
}

bool RawClient::second_stream_refused() const {
  std::lock_guard lock(mutex_);
  return second_stream_refused_;
}

std::vector<std::string> RawClient::receive_errors() const {
  std::lock_guard lock(mutex_);
  return receive_errors_;
}

void RawClient::on_handshake_completed() {
  quic::Connection* connection = endpoint_->connection();
  auto stream = connection->open_bidi_stream();
  const ngtcp2_transport_params* params = ngtcp2_conn_get_remote_transport_params(connection->native());
  std::lock_guard lock(mutex_);
  alpn_ = connection->alpn();
  retried_ = params != nullptr && params->retry_scid_present != 0;
  if (params != nullptr) {
    stream_limits_ = {params->initial_max_streams_bidi, params->initial_max_streams_uni};
  }
  second_stream_refused_ = stream && !connection->open_bidi_stream() && !connection->open_uni_stream();
  if (!stream) {
    receive_errors_.push_back("cannot open the stream: " + stream.error().message);
    return;
  }
  stream_ = *stream;
  handshake_done_ = true;
  cv_.notify_all();
}

void RawClient::on_stream_data(quic::StreamId id, std::span<const std::uint8_t> data, bool) {
  auto [it, inserted] = readers_.try_emplace(id, kReaderMaxFrame);
  wire::FrameReader& reader = it->second;
  reader.append(data);
  std::lock_guard lock(mutex_);
  for (;;) {
    auto frame = reader.next();
    if (!frame) {
      receive_errors_.push_back("stream " + std::to_string(id) + ": " + frame.error().reason);
      return;
    }
    if (!frame->has_value()) return;
    auto message = wire::decode(**frame);
    if (!message) {
      receive_errors_.push_back("stream " + std::to_string(id) + ": " + message.error().reason);
      continue;
    }
    RawMessage owned;
    owned.type = message->type;
    owned.client_id = message->client_id;
    owned.for_client = message->for_client;
    owned.payload.assign(message->payload.begin(), message->payload.end());
    owned.message_id = message->message_id;
    owned.status = message->status;
    owned.error_code = message->error_code;
    owned.reason = std::string(message->reason);
    owned.max_frame_size = message->max_frame_size;
    owned.sequence = message->sequence;
    owned.features = message->features;
    for (std::size_t i = 0; i < message->message_ids.size(); ++i) owned.message_ids.push_back(message->message_ids[i]);
    owned.stream = id;
    messages_.push_back(std::move(owned));
    cv_.notify_all();
  }
}

void RawClient::on_data_acknowledged() {
  quic::Connection* connection = endpoint_ == nullptr ? nullptr : endpoint_->connection();
  if (connection == nullptr) return;
  std::lock_guard lock(mutex_);
  acknowledged_ = connection->acknowledged_offset(stream_);
}

std::uint64_t RawClient::acknowledged_bytes() const {
  std::lock_guard lock(mutex_);
  return acknowledged_;
}

void RawClient::on_closed(const quic::CloseInfo& info) {
  std::lock_guard lock(mutex_);
  close_info_ = info;
  cv_.notify_all();
}

}  // namespace debra::testing
