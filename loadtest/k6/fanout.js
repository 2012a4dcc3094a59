// The fanout scenario for k6 users (k6 is not installable on the machine the
// project is built on; CI only checks this file's syntax with node --check).
//
//   k6 run -e URL=ws://127.0.0.1:8080/ws/fanout -e CLIENTS=1000 -e SENDERS=10 -e RATE=400 loadtest/k6/fanout.js
//
// Every client joins the room; the first SENDERS clients send RATE messages a
// second between them, each carrying its send time; every client records the
// delivery latency of every chat it receives.
import ws from 'k6/ws';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';

const URL = __ENV.URL || 'ws://127.0.0.1:8080/ws/fanout';
const CLIENTS = parseInt(__ENV.CLIENTS || '1000', 10);
const SENDERS = parseInt(__ENV.SENDERS || '10', 10);
const RATE = parseFloat(__ENV.RATE || '400');
const DURATION_S = parseInt(__ENV.DURATION_S || '30', 10);

const latency = new Trend('chat_delivery_latency', true);
const delivered = new Counter('chat_deliveries');

export const options = {
  scenarios: {
    fanout: { executor: 'per-vu-iterations', vus: CLIENTS, iterations: 1, maxDuration: `${DURATION_S + 30}s` },
  },
};

export default function () {
  const sender = __VU <= SENDERS;
  const intervalMs = (1000 * SENDERS) / RATE;
  const res = ws.connect(URL, {}, (socket) => {
    socket.on('open', () => {
      if (sender) {
        // Start after every client had time to join.
        socket.setTimeout(() => {
          socket.setInterval(() => {
            const content = `${Date.now()}:` + 'x'.repeat(48);
            socket.send(JSON.stringify({ type: 'chat', data: { content } }));
          }, intervalMs);
        }, 5000);
      }
      socket.setTimeout(() => socket.close(), (DURATION_S + 5) * 1000);
    });
    socket.on('message', (text) => {
      const msg = JSON.parse(text);
      if (msg.type !== 'chat') return;
      const sent = parseInt(msg.data.content.split(':')[0], 10);
      latency.add(Date.now() - sent);
      delivered.add(1);
    });
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
}
