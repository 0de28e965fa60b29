// The official centrifuge-js client (v5) on Node 20, with a WebSocket class from `ws` that counts
// connection attempts and records every frame the client sends.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

export { Centrifuge };

export function countingWebSocket() {
    const stats = { opened: 0, sent: [] };
    class CountingWebSocket extends WebSocket {
        constructor(...args) {
            super(...args);
            stats.opened++;
        }

        send(data, ...rest) {
            stats.sent.push(typeof data === 'string' ? data : Buffer.from(data).toString('utf8'));
            return super.send(data, ...rest);
        }
    }
    return { WebSocket: CountingWebSocket, stats };
}

// new Centrifuge for herald h; returns {client, stats, events} where events records
// connecting/connected/disconnected/error events in order.
export function makeClient(h, options = {}) {
    const { WebSocket: W, stats } = countingWebSocket();
    const client = new Centrifuge(h.wsUrl, {
        websocket: W,
        minReconnectDelay: 100,
        maxReconnectDelay: 500,
        timeout: 5000,
        ...options,
    });
    const events = [];
    for (const ev of ['connecting', 'connected', 'disconnected', 'error']) {
        client.on(ev, (ctx) => events.push({ ev, ctx }));
    }
    return { client, stats, events };
}

// Resolves with the first event `name` emitted by emitter, or rejects after timeout.
export function once(emitter, name, timeout = 5000) {
    const p = new Promise((resolve, reject) => {
        const t = setTimeout(() => {
            emitter.removeListener(name, on);
            reject(new Error(`timeout waiting for '${name}'`));
        }, timeout);
        function on(ctx) {
            clearTimeout(t);
            resolve(ctx);
        }
        emitter.once(name, on);
    });
    // Handled here too: a test that failed earlier does not leave an unhandled rejection behind.
    p.catch(() => {});
    return p;
}
