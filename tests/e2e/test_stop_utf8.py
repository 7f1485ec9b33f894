"""Stop sequences across token boundaries (held back, never sent) and UTF-8 integrity of
every chunk on a byte-level model that emits arbitrary bytes."""
import unittest

import harness
from harness import pb


def varint(buf, i):
    value, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def raw_text_field(raw):
    """The bytes of GenerateResponse.text (field 2) straight from the wire, undecoded."""
    i, text = 0, b""
    while i < len(raw):
        key, i = varint(raw, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = varint(raw, i)
        elif wire == 2:
            n, i = varint(raw, i)
            if field == 2:
                text += raw[i:i + n]
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise AssertionError("unexpected wire type %d" % wire)
    return text


class StopAndUtf8Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server()
        cls.stub = cls.server.stub()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def generate(self, stops=(), n=60, temperature=0.0, seed=7, text="The enwik8 data set is "):
        r = pb.GenerateRequest(text=text)
        r.sampling.temperature = temperature
        r.sampling.seed = seed
        r.stopping.max_new_tokens = n
        r.stopping.ignore_eos = True
        r.stopping.stop.extend(stops)
        return harness.collect(self.stub.Generate(r))

    def test_stop_sequence_spanning_tokens_is_never_sent(self):
        # Sampled text from the random fixture model is mostly multi-byte noise; pick a stop
        # string out of the continuation itself.
        text, tokens, finish, _ = self.generate(n=80, temperature=0.8, seed=11)
        self.assertEqual(finish.reason, pb.FINISH_REASON_LENGTH)
        self.assertGreater(len(text), 12)
        k = len(text) // 3
        stop = text[k:k + 4]
        while len(stop.encode()) < 3:  # at least three bytes: three tokens on a byte-level model
            stop = text[k:k + len(stop) + 1]
        first = text.find(stop)
        stopped_text, stopped_tokens, stopped, messages = self.generate([stop], n=80, temperature=0.8, seed=11)
        self.assertEqual(stopped.reason, pb.FINISH_REASON_STOP_SEQUENCE)
        self.assertEqual(stopped.stop_sequence, stop)
        self.assertEqual(stopped_text, text[:first])
        # Token ids: only tokens whose bytes all lie before the match.
        sent_bytes = len(text[:first].encode())
        self.assertLessEqual(len(stopped_tokens), sent_bytes)
        self.assertEqual(stopped_tokens, tokens[:len(stopped_tokens)])
        for m in messages:
            self.assertNotIn(stop, m.text)

    def test_stop_that_never_occurs_changes_nothing(self):
        text, tokens, finish, _ = self.generate(n=40, temperature=0.7, seed=3)
        text2, tokens2, finish2, _ = self.generate(["\x01never\x02"], n=40, temperature=0.7, seed=3)
        self.assertEqual((text2, tokens2), (text, tokens))
        self.assertEqual(finish2.reason, pb.FINISH_REASON_LENGTH)

    def test_stop_token_ids(self):
        _, tokens, _, _ = self.generate(n=30, temperature=0.0)
        stop_id = tokens[5]
        first = tokens.index(stop_id)
        r = pb.GenerateRequest(text="The enwik8 data set is ")
        r.sampling.temperature = 0.0
        r.stopping.max_new_tokens = 30
        r.stopping.ignore_eos = True
        r.stopping.stop_token_ids.append(stop_id)
        _, stopped_tokens, finish, _ = harness.collect(self.stub.Generate(r))
        self.assertEqual(finish.reason, pb.FINISH_REASON_STOP_TOKEN)
        self.assertEqual(stopped_tokens, tokens[:first])

    def test_every_chunk_is_whole_utf8(self):
        # The raw bytes of every chunk's text must decode alone: no character is split
        # across chunks and nothing invalid is sent.
        for seed in range(8):
            r = pb.GenerateRequest(text="naïve café — ünïcödé 中文 ")
            r.sampling.temperature = 1.4
            r.sampling.seed = seed
            r.stopping.max_new_tokens = 64
            r.stopping.ignore_eos = True
            call = self.server.channel().unary_stream(
                "/seqboat.v1.SeqBoat/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                response_deserializer=lambda raw: raw)
            chunks = 0
            for raw in call(r):
                raw_text_field(raw).decode("utf-8", errors="strict")  # raises on a split character
                chunks += 1
            self.assertGreater(chunks, 1)


if __name__ == "__main__":
    unittest.main()
