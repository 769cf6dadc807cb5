using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Pricing;
using Bursar.Core.Tokens;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Simulator;

/// <summary>
/// The built-in provider Simulator: serves Anthropic Messages and OpenAI Chat Completions as
/// <c>../shared/reference/PROVIDER_API.md</c> describes them, with deterministic answers, real token counts,
/// the exact streaming event sequences, tool calls, both providers' prompt-cache rules, configurable latency
/// and injected errors. Hosted on Kestrel (<c>bursar simulate-provider</c>) or in-process (<see cref="SimulatorHttpHandler"/>).
/// </summary>
public sealed partial class ProviderSimulator
{
    private static readonly string[] Vocabulary =
    [
        "the", "answer", "is", "clear", "and", "simple", "we", "can", "see", "that", "this", "works", "because", "of", "a",
        "good", "plan", "for", "each", "step", "in", "order", "to", "make", "it", "right", "with", "care", "so", "you", "get",
        "what", "need", "from", "data", "here", "now", "then", "more", "less", "time", "cost", "value", "model", "result",
        "test", "case", "point", "way", "part", "team", "work", "best", "next", "first", "last", "long", "short", "fast", "well",
    ];

    private readonly SimulatorOptions _options;
    private readonly TimeProvider _time;
    private readonly PriceCatalog _catalog;
    private readonly TokenCounter _counter;
    private long _ids;

    public ProviderSimulator(SimulatorOptions options, TimeProvider? time = null, PriceCatalog? catalog = null, TokenCounter? counter = null)
    {
        _options = options;
        _time = time ?? TimeProvider.System;
        _catalog = catalog ?? new PriceCatalog(PriceFiles.LoadBuiltIn());
        _counter = counter ?? TokenCounter.Default;
        Cache = new PromptCacheModel(_time);
    }

    public PromptCacheModel Cache { get; }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> _deploymentModels = new(StringComparer.Ordinal);

    /// <summary>Models a deployment served by this Simulator names exactly (patterns such as <c>gpt-*</c> name no model).</summary>
    public void AddModels(IEnumerable<string> models)
    {
        foreach (var m in models)
            if (!string.IsNullOrWhiteSpace(m) && !m.EndsWith('*')) _deploymentModels.TryAdd(m, 0);
    }

    /// <summary>
    /// Whether the provider behind <paramref name="dialect"/> has <paramref name="model"/>: a model of the price catalog that is not the other
    /// provider's (built-in prices, imported or configured ones, dated ids such as <c>-20250929</c> included), one named by a deployment, or one
    /// of <see cref="SimulatorOptions.Models"/>. Anything else gets the provider's 404, as a made-up model would.
    /// </summary>
    public bool Knows(Dialect dialect, string model)
    {
        if (_deploymentModels.ContainsKey(model) || _options.Models.Contains(model, StringComparer.Ordinal)) return true;
        if (_catalog.Find(model).Price is not { } price) return false;
        var other = dialect == Dialect.OpenAI ? "anthropic" : "openai";
        return !string.Equals(price.Provider, other, StringComparison.OrdinalIgnoreCase);
    }

    private Dictionary<string, (bool Weak, bool Strong)>? _labeled;

    /// <summary>The labeled prompts of <see cref="SimulatorOptions.LabeledSets"/>, loaded on first use.</summary>
    private Dictionary<string, (bool Weak, bool Strong)> Labeled => LazyInitializer.EnsureInitialized(ref _labeled, () =>
    {
        var map = new Dictionary<string, (bool, bool)>(StringComparer.Ordinal);
        foreach (var set in _options.LabeledSets)
            foreach (var p in Bursar.Core.Routing.RoutingDataset.Load(set))
                map.TryAdd(p.Prompt.Trim(), (p.WeakCorrect, p.StrongCorrect));
        return map;
    });

    /// <summary>For a labeled prompt: whether <paramref name="model"/> answers it correctly, as the recorded strong or weak model did.</summary>
    public bool? Graded(string model, string lastUser)
    {
        if (_options.LabeledSets.Count == 0 || !Labeled.TryGetValue(lastUser.Trim(), out var label)) return null;
        var strong = _options.StrongModels.Count > 0
            ? _options.StrongModels.Any(m => model.StartsWith(m, StringComparison.Ordinal))
            : Bursar.Core.Routing.TierLadders.Locate(model) is { } at && at.Tier == at.Ladder.Length - 1;
        return strong ? label.Strong : label.Weak;
    }

    public SimulatorOptions Options => _options;

    /// <summary>Requests served, by path.</summary>
    public long RequestCount => Interlocked.Read(ref _requests);
    private long _requests;

    public async Task HandleAsync(SimulatorExchange x, CancellationToken ct)
    {
        Interlocked.Increment(ref _requests);
        var path = x.Path.TrimEnd('/');
        try
        {
            if (await BatchRouteAsync(x, path, ct).ConfigureAwait(false)) return;
            switch (x.Method, path)
            {
                case ("POST", "/v1/messages"):
                    await MessagesAsync(x, ct).ConfigureAwait(false);
                    break;
                case ("POST", "/v1/messages/count_tokens"):
                    await CountTokensAsync(x, ct).ConfigureAwait(false);
                    break;
                case ("POST", "/v1/chat/completions"):
                    await ChatAsync(x, ct).ConfigureAwait(false);
                    break;
                case ("POST", "/v1/embeddings"):
                    await EmbeddingsAsync(x, ct).ConfigureAwait(false);
                    break;
                case (_, "/v1/responses"):
                case (_, _) when path.StartsWith("/v1/responses/", StringComparison.Ordinal):
                    await ResponsesRouteAsync(x, path, ct).ConfigureAwait(false);
                    break;
                case ("GET", "/v1/models"):
                    await ModelsAsync(x, ct).ConfigureAwait(false);
                    break;
                default:
                    await ErrorAsync(x, path.Contains("messages", StringComparison.Ordinal) ? Dialect.Anthropic : Dialect.OpenAI,
                        new ProviderError(404, $"The Simulator has no endpoint {x.Method} {x.Path}."), ct).ConfigureAwait(false);
                    break;
            }
        }
        catch (SimulatorRequestException e)
        {
            await ErrorAsync(x, e.Dialect, e.Error, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or FormatException or InvalidCastException or JsonException)
        {
            // a field of an unexpected kind or text that is not valid: the provider answers 400, so does the Simulator
            await ErrorAsync(x, path.Contains("messages", StringComparison.Ordinal) ? Dialect.Anthropic : Dialect.OpenAI,
                ProviderError.BadRequest($"Invalid request: {e.Message}"), ct).ConfigureAwait(false);
        }
    }

    private sealed class SimulatorRequestException(Dialect dialect, ProviderError error) : Exception(error.Message)
    {
        public Dialect Dialect { get; } = dialect;
        public ProviderError Error { get; } = error;
    }

    private static SimulatorRequestException Bad(Dialect d, string message, string? param = null) => new(d, ProviderError.BadRequest(message, param));

    // ---------------------------------------------------------------- shared

    private static JsonObject ParseBody(SimulatorExchange x, Dialect d)
    {
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(x.Body.Span);
        }
        catch (JsonException e)
        {
            throw Bad(d, $"The request body is not valid JSON: {e.Message}");
        }
        return node as JsonObject ?? throw Bad(d, "The request body must be a JSON object.");
    }

    private SimulatorFault? TakeFault(string allText)
    {
        var i = allText.IndexOf("[[sim:fault=", StringComparison.Ordinal);
        if (i >= 0)
        {
            var end = allText.IndexOf("]]", i, StringComparison.Ordinal);
            if (end > i && SimulatorFault.Parse(allText[(i + 12)..end]) is { } f) return f;
        }
        return _options.Faults.TryTake(out var q) ? q : null;
    }

    private static int? RequestedOutputTokens(string allText)
    {
        var i = allText.IndexOf("[[sim:tokens=", StringComparison.Ordinal);
        if (i < 0) return null;
        var end = allText.IndexOf("]]", i, StringComparison.Ordinal);
        return end > i && int.TryParse(allText.AsSpan(i + 13, end - i - 13), NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? Math.Clamp(n, 1, 32_768) : null;
    }

    private async Task ErrorAsync(SimulatorExchange x, Dialect d, ProviderError e, CancellationToken ct)
    {
        x.SetStatus(e.Status);
        x.SetHeader("content-type", "application/json");
        if (e.RetryAfterSeconds is { } ra) x.SetHeader("retry-after", ra.ToString(CultureInfo.InvariantCulture));
        var reqId = "req_sim_" + Interlocked.Increment(ref _ids).ToString("x8", CultureInfo.InvariantCulture);
        x.SetHeader(d == Dialect.Anthropic ? "request-id" : "x-request-id", reqId);
        await x.WriteAsync(e.ToJson(d, d == Dialect.Anthropic ? reqId : null), ct).ConfigureAwait(false);
    }

    private static ProviderError FaultError(SimulatorFault f) => f.Status switch
    {
        429 => new ProviderError(429, "Simulated rate limit: number of requests has exceeded your per-minute rate limit.", ErrorSource.Upstream) { RetryAfterSeconds = f.RetryAfterSeconds ?? 1, Code = "rate_limit_exceeded" },
        529 => new ProviderError(529, "Overloaded", ErrorSource.Upstream),
        _ => new ProviderError(f.Status, $"Simulated upstream error {f.Status}.", ErrorSource.Upstream),
    };

    private string NextId(string prefix) => prefix + Interlocked.Increment(ref _ids).ToString("x12", CultureInfo.InvariantCulture);

    /// <summary>Deterministic answer words for a prompt, within the output budget.</summary>
    private (string Text, int Tokens, bool Truncated) Answer(string model, string seedText, int? wanted, long maxTokens, string? prefix)
    {
        var seed = PromptCacheModel.HashBytes(Encoding.UTF8.GetBytes(model + "\n" + seedText));
        var target = wanted ?? (int)(12 + seed % 40);
        var sb = new StringBuilder(prefix);
        var tokens = prefix is null ? 0 : _counter.Count(model, prefix);
        var truncated = false;
        var rng = seed;
        var isClaude = TokenCounter.IsClaude(model);
        while (tokens < target)
        {
            rng = rng * 6364136223846793005UL + 1442695040888963407UL;
            var word = Vocabulary[(int)(rng >> 33) % Vocabulary.Length];
            var piece = sb.Length == 0 ? char.ToUpperInvariant(word[0]) + word[1..] : " " + word;
            var wt = isClaude ? 1 : _counter.Count(model, piece);
            if (tokens + wt > maxTokens)
            {
                truncated = true;
                break;
            }
            sb.Append(piece);
            tokens += wt;
        }
        if (!truncated && tokens < maxTokens)
        {
            sb.Append('.');
            tokens += isClaude ? 1 : _counter.Count(model, ".");
        }
        return (sb.ToString(), tokens, truncated);
    }

    private readonly record struct TextReply(string Text, int Tokens, bool Truncated, string? Stop);

    /// <summary>The deterministic text reply both dialects give: after a tool result it quotes the result; stop sequences cut it.</summary>
    private TextReply TextAnswer(string model, string lastUser, string allText, long maxTokens, string? toolResult, IReadOnlyList<string> stops)
    {
        if (toolResult is null && allText.Contains(Bursar.Core.Routing.DifficultyPrompt.Instruction, StringComparison.Ordinal))
        {
            // asked for a one-word difficulty (Bursar's LLM classifier): answer like a model that follows the instruction
            var word = Bursar.Core.Routing.DifficultyPrompt.SimulatedAnswer(lastUser);
            return new TextReply(word, _counter.Count(model, word), false, null);
        }
        var prefix = toolResult is not null ? $"Based on the tool result ({Truncate(toolResult, 60)}):"
            : Graded(model, lastUser) is { } correct ? (correct ? "[[graded:correct]]" : "[[graded:wrong]]") : null;
        var (text, tokens, truncated) = Answer(model, lastUser, RequestedOutputTokens(allText), maxTokens, prefix);
        var (cut, stop) = ApplyStop(text, stops);
        return new TextReply(cut, stop is null ? tokens : _counter.Count(model, cut), truncated, stop);
    }

    private async Task WriteAnswerAsync(SimulatorExchange x, int outTokens, Action<Utf8JsonWriter> body, CancellationToken ct)
    {
        await PaceAsync(first: true, outTokens, ct).ConfigureAwait(false);
        await WriteObjectAsync(x, body, ct).ConfigureAwait(false);
    }

    /// <summary>A 200 JSON answer: one object whose members <paramref name="body"/> writes.</summary>
    private static ValueTask WriteObjectAsync(SimulatorExchange x, Action<Utf8JsonWriter> body, CancellationToken ct)
    {
        x.SetStatus(200);
        x.SetHeader("content-type", "application/json");
        return x.WriteAsync(Json(w => { w.WriteStartObject(); body(w); w.WriteEndObject(); }), ct);
    }

    /// <summary>A 200 OpenAI-style list: <c>{"object":"list","data":[...]}</c> then whatever <paramref name="after"/> adds.</summary>
    private static ValueTask WriteListAsync(SimulatorExchange x, Action<Utf8JsonWriter> items, Action<Utf8JsonWriter>? after, CancellationToken ct) =>
        WriteObjectAsync(x, w =>
        {
            w.WriteString("object", "list");
            w.WriteStartArray("data");
            items(w);
            w.WriteEndArray();
            after?.Invoke(w);
        }, ct);

    private static void StartStream(SimulatorExchange x)
    {
        x.SetStatus(200);
        x.SetHeader("content-type", "text/event-stream");
        x.SetHeader("cache-control", "no-cache");
    }

    private static string Truncate(string? s, int n) => s is null ? "" : s.Length <= n ? s : s[..n];

    private static (string Text, string? Stop) ApplyStop(string text, IReadOnlyList<string> stops)
    {
        var best = -1;
        string? which = null;
        foreach (var s in stops)
        {
            if (string.IsNullOrEmpty(s)) continue;
            var i = text.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && (best < 0 || i < best))
            {
                best = i;
                which = s;
            }
        }
        return best < 0 ? (text, null) : (text[..best], which);
    }

    /// <summary>Arguments for a tool call generated from its JSON schema: required properties (all if none are required).</summary>
    private static JsonObject ToolArguments(JsonNode? schema)
    {
        var args = new JsonObject();
        if (schema?["properties"] is not JsonObject props) return args;
        var required = (schema["required"] as JsonArray)?.Select(n => n?.GetValue<string>()).Where(s => s is not null).ToHashSet() ?? [];
        foreach (var (name, def) in props)
        {
            if (required.Count > 0 && !required.Contains(name)) continue;
            args[name] = SampleValue(name, def);
        }
        return args;
    }

    private static JsonNode? SampleValue(string name, JsonNode? def)
    {
        if (def?["enum"] is JsonArray { Count: > 0 } en) return en[0]?.DeepClone();
        var type = def?["type"] is JsonValue tv && tv.TryGetValue<string>(out var t) ? t : "string";
        return type switch
        {
            "integer" => 42,
            "number" => 3.5,
            "boolean" => true,
            "array" => new JsonArray(),
            "object" => ToolArguments(def),
            _ => name.Contains("city", StringComparison.OrdinalIgnoreCase) || name.Contains("location", StringComparison.OrdinalIgnoreCase) ? "Paris" : "sample " + name,
        };
    }

    private async Task PaceAsync(bool first, int tokens, CancellationToken ct)
    {
        var delay = first ? _options.TimeToFirstToken : TimeSpan.Zero;
        if (_options.TokensPerSecond > 0 && tokens > 0) delay += TimeSpan.FromSeconds(tokens / _options.TokensPerSecond);
        if (delay > TimeSpan.Zero) await Task.Delay(delay, _time, ct).ConfigureAwait(false);
    }

    private static IEnumerable<string> Chunks(string text)
    {
        var start = 0;
        for (var i = 1; i < text.Length; i++)
        {
            if (text[i] == ' ')
            {
                yield return text[start..i];
                start = i;
            }
        }
        if (start < text.Length) yield return text[start..];
    }

    private static byte[] Json(Action<Utf8JsonWriter> write)
    {
        var buf = new ArrayBufferWriter<byte>(512);
        using (var w = new Utf8JsonWriter(buf)) write(w);
        return buf.WrittenSpan.ToArray();
    }

    private static readonly Bursar.Core.Caching.Semantic.HashedNGramEmbeddingGenerator EmbeddingModel = new(512);

    /// <summary>OpenAI's limits on one embeddings request (PROVIDER_API.md section 9).</summary>
    public const int MaxEmbeddingInputs = 2048, MaxEmbeddingInputTokens = 8192, MaxEmbeddingRequestTokens = 300_000;

    /// <summary>
    /// OpenAI-compatible embeddings: deterministic vectors (hashed character and word n-grams, 512 dimensions unless
    /// <c>dimensions</c> asks for fewer), real token counts; inputs are strings or token arrays; <c>encoding_format</c>
    /// <c>float</c> or <c>base64</c> (little-endian float32, as the npm SDK asks for by default).
    /// </summary>
    private async Task EmbeddingsAsync(SimulatorExchange x, CancellationToken ct)
    {
        const Dialect d = Dialect.OpenAI;
        var body = ParseBody(x, d);
        if (string.IsNullOrEmpty(x.Header("authorization"))) throw new SimulatorRequestException(d, ProviderError.Unauthorized("You didn't provide an API key."));
        var model = body["model"] is JsonValue mv && mv.TryGetValue<string>(out var m) ? m : throw Bad(d, "you must provide a model parameter", "model");
        var inputs = new List<(string? Text, int Tokens)>();
        void AddText(string s, string field)
        {
            if (s.Length == 0) throw Bad(d, $"'{field}' cannot be an empty string.", field);
            inputs.Add((s, _counter.Count("text-embedding-3-small", s)));
        }
        void AddTokens(JsonArray a, string field)
        {
            if (a.Count == 0) throw Bad(d, $"'{field}' cannot be an empty array of tokens.", field);
            if (!a.All(e => e is JsonValue ev && ev.TryGetValue<long>(out var t) && t >= 0)) throw Bad(d, $"'{field}' must be an array of non-negative integer tokens.", field);
            inputs.Add((null, a.Count));
        }
        switch (body["input"])
        {
            case JsonValue v when v.TryGetValue<string>(out var one):
                AddText(one, "input");
                break;
            case JsonArray a when a.Count > 0 && a.All(e => e is JsonValue ev && ev.TryGetValue<long>(out _)):
                AddTokens(a, "input");
                break;
            case JsonArray a when a.Count > 0:
                for (var i = 0; i < a.Count; i++)
                {
                    if (a[i] is JsonValue ev && ev.TryGetValue<string>(out var s)) AddText(s, $"input[{i}]");
                    else if (a[i] is JsonArray ta) AddTokens(ta, $"input[{i}]");
                    else throw Bad(d, $"Invalid type for 'input[{i}]': expected a string or an array of tokens.", $"input[{i}]");
                }
                break;
            default:
                throw Bad(d, "'input' must be a string, an array of strings, an array of tokens or an array of token arrays (not empty).", "input");
        }
        if (inputs.Count > MaxEmbeddingInputs) throw Bad(d, $"'input' has {inputs.Count} items; the limit is {MaxEmbeddingInputs}.", "input");
        var longest = inputs.Max(i => i.Tokens);
        if (longest > MaxEmbeddingInputTokens)
            throw Bad(d, $"This model's maximum context length is {MaxEmbeddingInputTokens} tokens, however you requested {longest} tokens in one input.", "input");
        var tokens = inputs.Sum(i => (long)i.Tokens);
        if (tokens > MaxEmbeddingRequestTokens) throw Bad(d, $"Requested {tokens} tokens, max {MaxEmbeddingRequestTokens} tokens per request.", "input");
        var dims = 512;
        if (body["dimensions"] is { } dn && (dn is not JsonValue dv || !dv.TryGetValue(out dims) || dims is < 1 or > 512))
            throw Bad(d, "Invalid 'dimensions': expected an integer from 1 to 512 (the Simulator's vectors).", "dimensions");
        var format = body["encoding_format"] switch
        {
            null => "float",
            JsonValue fv when fv.TryGetValue<string>(out var f) && f is "float" or "base64" => f,
            _ => throw Bad(d, "Invalid value for 'encoding_format': supported values are 'float' and 'base64'.", "encoding_format"),
        };
        await WriteListAsync(x, w =>
        {
            for (var i = 0; i < inputs.Count; i++)
            {
                var vector = EmbeddingModel.Embed(inputs[i].Text ?? "tokens " + i).AsSpan(0, dims).ToArray();
                if (dims < 512)
                {
                    // a shortened vector is renormalized, as text-embedding-3's are
                    var norm = MathF.Sqrt(vector.Sum(f => f * f));
                    if (norm > 0) for (var k = 0; k < vector.Length; k++) vector[k] /= norm;
                }
                w.WriteStartObject();
                w.WriteString("object", "embedding");
                w.WriteNumber("index", i);
                if (format == "base64")
                {
                    w.WriteBase64String("embedding", System.Runtime.InteropServices.MemoryMarshal.AsBytes(vector.AsSpan()));
                }
                else
                {
                    w.WriteStartArray("embedding");
                    foreach (var f in vector) w.WriteNumberValue(f);
                    w.WriteEndArray();
                }
                w.WriteEndObject();
            }
        }, w =>
        {
            w.WriteString("model", model);
            w.WriteStartObject("usage");
            w.WriteNumber("prompt_tokens", tokens);
            w.WriteNumber("total_tokens", tokens);
            w.WriteEndObject();
        }, ct).ConfigureAwait(false);
    }

    private ValueTask ModelsAsync(SimulatorExchange x, CancellationToken ct) =>
        WriteListAsync(x, w =>
        {
            foreach (var m in _catalog.Models.Where(m => m.Provider is "openai" or "anthropic"))
            {
                w.WriteStartObject();
                w.WriteString("id", m.Model);
                w.WriteString("object", "model");
                w.WriteNumber("created", 1_700_000_000);
                w.WriteString("owned_by", m.Provider);
                w.WriteEndObject();
            }
        }, null, ct);
}
