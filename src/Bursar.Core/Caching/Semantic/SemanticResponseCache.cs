using System.Text.Json.Nodes;

namespace Bursar.Core.Caching.Semantic;

/// <summary>Options of the semantic response cache (<c>Bursar:SemanticCache</c>). Off by default: turn it on per feature after <c>bursar eval semantic-cache</c>.</summary>
public sealed class SemanticCacheOptions
{
    public const string Section = "Bursar:SemanticCache";

    /// <summary>Features (routes) whose questions may be answered by a similar earlier question. "*" for all. Default none.</summary>
    public List<string> Features { get; set; } = [];
    /// <summary>Cosine similarity at or above which a cached answer is reused (calibrated per generator). Default 0.95.</summary>
    public float Threshold { get; set; } = 0.95f;
    /// <summary>Conversations with more user turns than this are never served from the semantic cache. Default 1.</summary>
    public int MaxUserTurns { get; set; } = 1;
    /// <summary>How long an answer is reused. Default 1 hour.</summary>
    public TimeSpan Ttl { get; set; } = TimeSpan.FromHours(1);
    /// <summary>Most entries held in total (each holds a 16 KB vector and the answer). Default 20,000.</summary>
    public int MaxEntries { get; set; } = 20_000;

    public bool AppliesTo(string? feature) => Features.Contains("*") || (feature is not null && Features.Contains(feature, StringComparer.Ordinal));

    public void Validate()
    {
        if (Threshold is <= 0 or > 1) throw new InvalidOperationException($"Bursar:SemanticCache:Threshold must be in (0, 1], not {Threshold}.");
        if (MaxUserTurns < 1) throw new InvalidOperationException("Bursar:SemanticCache:MaxUserTurns must be at least 1.");
    }
}

/// <summary>
/// Answers a question with the stored answer to a similar earlier one: embeddings through an
/// <see cref="Microsoft.Extensions.AI.IEmbeddingGenerator{TInput, TEmbedding}"/> (the local hashed n-gram one by default),
/// partitions by tenant, model, system prompt, dialect and streaming, a similarity threshold, and guards against
/// lookalikes (numbers, negation, named entities). Multi-turn conversations are never served from it.
/// </summary>
public sealed class SemanticResponseCache(SemanticCacheOptions options, HashedNGramEmbeddingGenerator generator, TimeProvider time)
{
    public sealed record Entry(string Question, CachedResponse Response);

    private readonly SparseVectorIndex<Entry> _index = new(generator.Dimensions);

    public SemanticCacheOptions Options => options;

    public int Count => _index.Count;

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

    public (Entry? Hit, float Score, string? Rejected) Lookup(string partition, string question)
    {
        var (entry, score) = _index.Nearest(partition, generator.Embed(question));
        if (entry is null || score < options.Threshold) return (null, score, null);
        if (time.GetUtcNow() - entry.Response.StoredAt > options.Ttl) return (null, score, "expired");
        if (!SemanticGuards.Compatible(question, entry.Question, out var why)) return (null, score, why);
        return (entry, score, null);
    }

    public void Add(string partition, string question, CachedResponse response)
    {
        if (_index.Count >= options.MaxEntries) return;
        _index.Add(partition, generator.Embed(question), new Entry(question, response));
    }
}
