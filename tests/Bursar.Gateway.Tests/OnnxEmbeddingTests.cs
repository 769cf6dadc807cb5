using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Embeddings.Onnx;

namespace Bursar.Gateway.Tests;

/// <summary>
/// The ONNX Runtime generator against a real ONNX model file: a tiny encoder written here byte by byte (an embedding table and a
/// Gather node, BERT-style inputs), with a WordPiece vocabulary. No model is downloaded; the operator's real encoder loads the same way.
/// </summary>
public sealed class OnnxEmbeddingTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("bursar-onnx-");
    private readonly string _model;
    private readonly string _vocab;

    // words sharing a vector mean the same thing to this toy encoder
    private static readonly (string Word, int Concept)[] Words =
    [
        ("cancel", 0), ("terminate", 0), ("stop", 0), ("order", 1), ("purchase", 1), ("my", 2), ("the", 2), ("where", 3), ("is", 2),
        ("parcel", 4), ("package", 4), ("refund", 5), ("money", 5), ("back", 6), ("how", 3), ("do", 2), ("i", 2),
    ];

    public OnnxEmbeddingTests()
    {
        _vocab = Path.Combine(_dir.FullName, "vocab.txt");
        File.WriteAllLines(_vocab, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", .. Words.Select(w => w.Word)]);
        const int dim = 8;
        var table = new float[(5 + Words.Length) * dim];
        for (var i = 0; i < Words.Length; i++) table[(5 + i) * dim + Words[i].Concept] = 1;
        table[1 * dim + 7] = 1; // [UNK]
        _model = Path.Combine(_dir.FullName, "encoder.onnx");
        File.WriteAllBytes(_model, TinyEncoder(5 + Words.Length, dim, table));
    }

    public void Dispose()
    {
        try { _dir.Delete(true); } catch (IOException) { }
    }

    private static float Cos(float[] a, float[] b) => a.Zip(b, (x, y) => x * y).Sum();

    [Fact]
    public void Paraphrases_embed_close_and_vectors_are_normalized()
    {
        using var g = new OnnxEmbeddingGenerator(_model, _vocab);
        var a = g.Embed("Cancel my order");
        var b = g.Embed("terminate my purchase");
        var c = g.Embed("Where is the package?");
        Assert.Equal(1f, MathF.Sqrt(a.Sum(x => x * x)), 4);
        Assert.True(Cos(a, b) > 0.99f, $"paraphrase {Cos(a, b)}");
        Assert.True(Cos(a, c) < 0.8f, $"different question {Cos(a, c)}");
        Assert.Equal(8, a.Length);
    }

    [Fact]
    public void A_missing_or_broken_model_file_is_named()
    {
        var missing = Assert.Throws<FileNotFoundException>(() => new OnnxEmbeddingGenerator(Path.Combine(_dir.FullName, "nope.onnx"), _vocab));
        Assert.Contains("OnnxModelPath", missing.Message);
        var broken = Path.Combine(_dir.FullName, "broken.onnx");
        File.WriteAllBytes(broken, Encoding.UTF8.GetBytes("this is not a model"));
        var bad = Assert.Throws<InvalidDataException>(() => new OnnxEmbeddingGenerator(broken, _vocab));
        Assert.Contains("broken.onnx", bad.Message);
    }

    [Fact]
    public async Task The_gateway_serves_a_semantic_hit_through_the_onnx_generator()
    {
        var gw = new ConfiguredGateway(["--Bursar:SemanticCache:Generator=onnx", $"--Bursar:SemanticCache:OnnxModelPath={_model}",
            $"--Bursar:SemanticCache:OnnxVocabPath={_vocab}", "--Bursar:SemanticCache:Features:1=onnx-faq", "--Bursar:SemanticCache:Threshold=0.95"]);
        await gw.InitializeAsync();
        try
        {
            async Task<string?> Ask(string q)
            {
                var body = new JsonObject { ["model"] = "gpt-4o-mini", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = q }) };
                using var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", body.ToJsonString(), feature: "onnx-faq"));
                Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
                return resp.Headers.TryGetValues("x-bursar-cache", out var v) ? v.Single() : null;
            }
            Assert.Equal("miss", await Ask("How do I cancel my order"));
            Assert.Equal("semantic-hit", await Ask("how do i terminate my purchase"));
            Assert.Equal("miss", await Ask("where is my parcel"));
        }
        finally
        {
            await gw.DisposeAsync();
        }
    }

    /// <summary>An ONNX ModelProto: inputs input_ids / attention_mask / token_type_ids (int64 [1, n]), output last_hidden_state = Gather(table, input_ids).</summary>
    private static byte[] TinyEncoder(int vocab, int dim, float[] table)
    {
        static Pb Shape(params object[] dims)
        {
            var shape = new Pb();
            foreach (var d in dims) shape.Msg(1, d is string p ? new Pb().Str(2, p) : new Pb().Int(1, (int)d));
            return shape;
        }
        static Pb Value(string name, int elemType, Pb shape) => new Pb().Str(1, name).Msg(2, new Pb().Msg(1, new Pb().Int(1, elemType).Msg(2, shape)));
        var raw = new byte[table.Length * 4];
        Buffer.BlockCopy(table, 0, raw, 0, raw.Length);
        var graph = new Pb()
            .Msg(1, new Pb().Str(1, "E").Str(1, "input_ids").Str(2, "last_hidden_state").Str(3, "gather").Str(4, "Gather"))
            .Str(2, "tiny-encoder")
            .Msg(5, new Pb().Int(1, vocab).Int(1, dim).Int(2, 1).Str(8, "E").Bytes(9, raw))
            .Msg(11, Value("input_ids", 7, Shape(1, "n")))
            .Msg(11, Value("attention_mask", 7, Shape(1, "n")))
            .Msg(11, Value("token_type_ids", 7, Shape(1, "n")))
            .Msg(12, Value("last_hidden_state", 1, Shape(1, "n", dim)));
        return new Pb().Int(1, 8).Str(2, "bursar-test").Msg(7, graph).Msg(8, new Pb().Str(1, "").Int(2, 13)).ToArray();
    }

    /// <summary>Just enough of the protobuf wire format to write an ONNX file.</summary>
    private sealed class Pb
    {
        private readonly MemoryStream _s = new();
        private void Varint(ulong v)
        {
            while (v >= 0x80) { _s.WriteByte((byte)(v | 0x80)); v >>= 7; }
            _s.WriteByte((byte)v);
        }
        public Pb Int(int field, long v) { Varint((ulong)(field << 3)); Varint((ulong)v); return this; }
        public Pb Bytes(int field, byte[] b) { Varint((ulong)(field << 3 | 2)); Varint((ulong)b.Length); _s.Write(b); return this; }
        public Pb Str(int field, string s) => Bytes(field, Encoding.UTF8.GetBytes(s));
        public Pb Msg(int field, Pb m) => Bytes(field, m.ToArray());
        public byte[] ToArray() => _s.ToArray();
    }
}
