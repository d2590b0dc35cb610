"""An OpenAI-compatible upstream for the tests, with faults on request.

Usage: fake_upstream.py PORT

Answers /v1/completions, /v1/chat/completions and /v1/embeddings. Every word of the prompt is
a prompt token; the completion is `max_tokens` words "w0 w1 ...", one token each, and the
usage says so. The prompt (or the last chat message) picks a behaviour by containing one of:

  FAULT:slow      waits 30 s before answering
  FAULT:stall     streams one chunk, then nothing
  FAULT:reset     streams two chunks, then resets the connection
  FAULT:500       answers 500
  FAULT:400       answers 400 with an OpenAI-shaped error
  FAULT:garbage   answers 200 with a body that is not JSON
  FAULT:huge      answers 200 with a 64 MiB body
  FAULT:endless   streams a chunk every 50 ms until the client goes away
  FAULT:overreport reports 1000 times the usage
  FAULT:nousage   answers without usage (no usage chunk when streaming)
  FAULT:short     (with another) stops after a quarter of `max_tokens` words

GET /log answers what was received: {"requests": [{"path", "body", "headers"}],
"disconnects": [unix time of each client that went away mid-stream]}.
"""

import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = {"requests": [], "disconnects": []}
LOCK = threading.Lock()


def prompt_text(body):
    if "messages" in body:
        content = body["messages"][-1].get("content") or ""
        return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return " ".join(p if isinstance(p, str) else " ".join(map(str, p)) for p in prompt)
    if "input" in body:
        value = body["input"]
        return value if isinstance(value, str) else " ".join(map(str, value))
    return prompt


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/log":
            with LOCK:
                self.send_json(200, LOG)
        elif self.path in ("/v1/models", "/health"):
            self.send_json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self.send_json(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with LOCK:
            LOG["requests"].append({"path": self.path, "body": body, "headers": {k.lower(): v for k, v in self.headers.items()}})
        text = prompt_text(body)
        fault = next((word[6:] for word in text.split() if word.startswith("FAULT:")), None)
        prompt_tokens = len(text.split())
        if fault == "slow":
            time.sleep(30)
        if fault == "500":
            return self.send_json(500, {"error": {"message": "internal upstream failure at /secret/path"}})
        if fault == "400":
            return self.send_json(400, {"error": {"message": "upstream says: prompt is too long", "type": "invalid_request_error", "param": "prompt", "code": "context_length_exceeded"}})
        if fault == "garbage":
            data = b"<html>not json"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if fault == "huge":
            size = 64 << 20
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b" " * (1 << 20)
            try:
                for _ in range(64):
                    self.wfile.write(chunk)
            except OSError:
                pass
            return
        if self.path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [0.5, -0.25, float(len(str(x)))]} for i, x in enumerate(inputs)]
            return self.send_json(200, {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 16))
        n = body.get("n", 1)
        scale = 1000 if fault == "overreport" else 1
        usage = {"prompt_tokens": prompt_tokens * scale, "completion_tokens": max_tokens * n * scale, "total_tokens": (prompt_tokens + max_tokens * n) * scale}
        chat = self.path == "/v1/chat/completions"
        short = "FAULT:short" in text.split()
        words = ["w%d " % i for i in range(max(1, max_tokens // 4) if short else max_tokens)]
        if not body.get("stream"):
            if chat:
                choices = [{"index": c, "message": {"role": "assistant", "content": "".join(words)}, "finish_reason": "length"} for c in range(n)]
                kind = "chat.completion"
            else:
                choices = [{"index": c, "text": "".join(words), "finish_reason": "length", "logprobs": None} for c in range(n)]
                kind = "text_completion"
            answer = {"id": "x-1", "object": kind, "created": int(time.time()), "model": body["model"], "choices": choices}
            if fault != "nousage":
                answer["usage"] = usage
            return self.send_json(200, answer)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

        def chunk(content, finish=None):
            if chat:
                choice = {"index": 0, "delta": {"content": content} if content is not None else {}, "finish_reason": finish}
                return {"id": "x-1", "object": "chat.completion.chunk", "created": 1, "model": body["model"], "choices": [choice]}
            return {"id": "x-1", "object": "text_completion", "created": 1, "model": body["model"], "choices": [{"index": 0, "text": content or "", "finish_reason": finish}]}

        def send(value):
            self.wfile.write(b"data: " + (value if isinstance(value, bytes) else json.dumps(value).encode()) + b"\n\n")
            self.wfile.flush()

        try:
            if fault == "endless":
                i = 0
                while True:
                    send(chunk("w%d " % i))
                    i += 1
                    time.sleep(0.05)
            for i, word in enumerate(words):
                send(chunk(word))
                if fault == "stall" and i == 0:
                    time.sleep(3600)
                if fault == "reset" and i == 1:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    return
            send(chunk(None, "length"))
            if fault != "nousage" and (body.get("stream_options") or {}).get("include_usage"):
                send({"id": "x-1", "object": "chat.completion.chunk" if chat else "text_completion", "created": 1, "model": body["model"], "choices": [], "usage": usage})
            send(b"[DONE]")
        except OSError:
            with LOCK:
                LOG["disconnects"].append(time.time())
        self.close_connection = True


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()
