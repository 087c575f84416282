// bench token's reference: the seed's stack for the same request, so our figures have a yardstick.
//
// POST /api/livekit/token with `authorization: Bearer <HS256 JWT>` and {conversationId, userId?,
// agentId?}: verify the bearer token, one findOne for ownership in the store, mint a LiveKit token
// with livekit-server-sdk, answer JSON shaped like ours. Configuration comes from the environment
// (see bench/token_throughput.py, which starts this). Loopback only; no access log (the seed had none).
'use strict';

const crypto = require('node:crypto');
const express = require('express');
const { MongoClient } = require('mongodb');
const { AccessToken, RoomConfiguration, RoomAgentDispatch, TrackSource } = require('livekit-server-sdk');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set`);
  return value;
};
const PORT = Number(env('REFERENCE_PORT'));
const JWT_SECRET = Buffer.from(env('REFERENCE_JWT_SECRET'));
const LIVEKIT_URL = env('LIVEKIT_URL');
const LIVEKIT_API_KEY = env('LIVEKIT_API_KEY');
const LIVEKIT_API_SECRET = env('LIVEKIT_API_SECRET');
const AGENT_NAME = process.env.LIVEKIT_AGENT_NAME || 'syntera-voice';
const TTL_SECONDS = 3600;

// HS256 verification with node:crypto: the cheapest correct check, so the reference is not slowed
// by a JWT library the seed may or may not have used.
function verifyBearer(header) {
  if (typeof header !== 'string' || !header.startsWith('Bearer ')) return null;
  const parts = header.slice(7).trim().split('.');
  if (parts.length !== 3) return null;
  const expected = crypto.createHmac('sha256', JWT_SECRET).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], 'base64url');
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
  let claims;
  try {
    const head = JSON.parse(Buffer.from(parts[0], 'base64url'));
    if (head.alg !== 'HS256') return null;
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch {
    return null;
  }
  if (typeof claims.sub !== 'string' || !claims.sub || typeof claims.exp !== 'number') return null;
  if (claims.exp * 1000 < Date.now() || claims.role === 'service') return null;
  return claims.sub;
}

async function main() {
  const client = new MongoClient(env('MONGODB_URI'), { serverSelectionTimeoutMS: 5000 });
  await client.connect();
  const conversations = client.db(env('REFERENCE_DATABASE')).collection('conversations');
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '64kb' }));

  app.post('/api/livekit/token', async (req, res) => {
    const subject = verifyBearer(req.get('authorization'));
    if (subject === null) return res.status(401).json({ code: 16, message: 'invalid bearer token' });
    const { conversationId, userId, agentId } = req.body || {};
    if (typeof conversationId !== 'string' || !conversationId) {
      return res.status(400).json({ code: 3, message: 'conversationId is required' });
    }
    if (userId && userId !== subject) return res.status(403).json({ code: 7, message: 'not yourself' });
    try {
      const conversation = await conversations.findOne(
        { _id: conversationId },
        { projection: { user_id: 1, agent_id: 1, channel: 1, status: 1 }, maxTimeMS: 5000 },
      );
      if (conversation === null) return res.status(404).json({ code: 5, message: 'no such conversation' });
      if (conversation.user_id !== subject) return res.status(403).json({ code: 7, message: 'not yours' });
      if (conversation.status === 'ENDED') return res.status(400).json({ code: 9, message: 'ended' });
      if (agentId && conversation.agent_id && agentId !== conversation.agent_id) {
        return res.status(400).json({ code: 3, message: 'agentId does not match' });
      }
      const room = `conversation:${conversationId}`;
      const token = new AccessToken(LIVEKIT_API_KEY, LIVEKIT_API_SECRET, {
        identity: subject,
        name: subject,
        ttl: TTL_SECONDS,
      });
      token.addGrant({
        roomJoin: true,
        room,
        canPublish: true,
        canPublishSources:
          conversation.channel === 'VIDEO'
            ? [TrackSource.MICROPHONE, TrackSource.CAMERA, TrackSource.SCREEN_SHARE, TrackSource.SCREEN_SHARE_AUDIO]
            : [TrackSource.MICROPHONE],
        canSubscribe: true,
        canPublishData: true,
      });
      token.roomConfig = new RoomConfiguration({
        name: room,
        emptyTimeout: 300,
        maxParticipants: 4,
        agents: [
          new RoomAgentDispatch({
            agentName: AGENT_NAME,
            metadata: JSON.stringify({ conversation_id: conversationId, agent_id: conversation.agent_id }),
          }),
        ],
      });
      const jwt = await token.toJwt();
      return res.json({
        token: jwt,
        url: LIVEKIT_URL,
        roomName: room,
        identity: subject,
        participantKind: 'PARTICIPANT_KIND_USER',
        expireTime: new Date((Math.floor(Date.now() / 1000) + TTL_SECONDS) * 1000).toISOString(),
        agentName: AGENT_NAME,
      });
    } catch (err) {
      console.error(err);
      return res.status(503).json({ code: 14, message: `store unavailable: ${err.name}` });
    }
  });

  const server = app.listen(PORT, '127.0.0.1', () => console.log(`reference listening on ${PORT}`));
  const stop = () => server.close(() => client.close().finally(() => process.exit(0)));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
