// Server-Sent Events over fetch(). EventSource cannot send an Authorization header, so
// the UI reads the stream itself and parses the text/event-stream format here.

/**
 * Parse SSE text incrementally. Feed chunks with push(); complete events come back as
 * {event, data, id}. Comment lines (":keep-alive") are ignored.
 */
export class SSEParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.event = "message";
    this.data = [];
    this.id = null;
  }

  push(chunk) {
    this.buffer += chunk;
    const events = [];
    let nl;
    while ((nl = this.buffer.indexOf("\n")) >= 0) {
      let line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (this.data.length) events.push({ event: this.event, data: this.data.join("\n"), id: this.id });
        this.reset();
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") this.data.push(value);
      else if (name === "event") this.event = value || "message";
      else if (name === "id") this.id = value;
    }
    return events;
  }
}

/** Yield every event of a fetch Response whose body is an SSE stream, until it ends. */
export async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const ev of parser.push(decoder.decode(value, { stream: true }))) yield ev;
    }
    for (const ev of parser.push(decoder.decode() + "\n\n")) yield ev;
  } finally {
    reader.cancel().catch(() => {});
  }
}
