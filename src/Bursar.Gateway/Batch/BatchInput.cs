using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Bursar.Core.Admission;
using Bursar.Core.Batch;
using Bursar.Core.Pricing;
using Bursar.Providers.Dialects;
using Bursar.Providers.Translation;
using Bursar.Providers.Upstream;

namespace Bursar.Gateway.Batch;

/// <summary>What an input's lines add up to once every one of them passed: the deployment that serves them, their manifest, their worst case.</summary>
public sealed record BatchInputSummary(UpstreamDeployment Deployment, string? Model, IReadOnlyList<ManifestLine> Lines, long Bytes)
{
    public decimal WorstUsd => Lines.Sum(l => l.WorstUsd);
}

/// <summary>
/// Checks every line of a batch before anything goes upstream, with errors in the caller's dialect that name the line
/// (OpenAI: <c>Line 3, field 'body.messages'</c>; Anthropic: <c>requests.2.params.messages</c>): the same one-pass
/// <see cref="RequestScan"/> a synchronous call gets, no streaming, one deployment of the caller's dialect for the whole
/// batch (OpenAI: one model per file), and each line's worst case at the batch rate for the budget reservation.
/// </summary>
public sealed partial class BatchInput(UpstreamRegistry registry, PriceCatalog catalog, AdmissionControl admission, BatchOptions options)
{
    public const string ChatEndpoint = "/v1/chat/completions";

    [GeneratedRegex("^[A-Za-z0-9_-]{1,64}$")]
    private static partial Regex AnthropicCustomId();

    /// <summary>
    /// Copies an OpenAI JSONL upload to <paramref name="spool"/> as it arrives (never held whole), checking each line;
    /// the first bad line ends it with its error.
    /// </summary>
    public async Task<(BatchInputSummary? Summary, ProviderError? Error)> SpoolOpenAIAsync(Stream source, Stream spool, CancellationToken ct)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var lines = new List<ManifestLine>();
        UpstreamDeployment? deployment = null;
        string? model = null;
        var lineNo = 0;
        ProviderError? Check(ReadOnlySpan<byte> line)
        {
            lineNo++;
            if (line.Trim(" \t\r"u8).Length == 0) return null;
            if (lines.Count >= options.MaxOpenAILines) return LineError(lineNo, "custom_id", $"the file holds more than {options.MaxOpenAILines} requests, the most one batch takes");
            var (entry, error, d) = CheckOpenAILine(line, lineNo, ids, ref model);
            if (error is not null) return error;
            deployment ??= d;
            lines.Add(entry);
            return null;
        }
        var (bytes, readError) = await SplitLinesAsync(source, spool, Check, ct).ConfigureAwait(false);
        if (readError is not null) return (null, readError);
        if (lines.Count == 0 || deployment is null) return (null, ProviderError.BadRequest("The batch input file holds no requests: send one JSON line per request ({\"custom_id\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\"}).", "file"));
        return (new BatchInputSummary(deployment, model, lines, bytes), null);
    }

    private static ProviderError LineError(int line, string field, string detail) =>
        ProviderError.BadRequest($"Invalid batch input: line {line}, field '{field}': {detail}.", field) with { Code = "invalid_batch_line" };

    private (ManifestLine Entry, ProviderError? Error, UpstreamDeployment? Deployment) CheckOpenAILine(ReadOnlySpan<byte> line, int n, HashSet<string> ids, ref string? model)
    {
        JsonDocument doc;
        try
        {
            var reader = new Utf8JsonReader(line);
            doc = JsonDocument.ParseValue(ref reader);
            if (reader.Read()) return (default, LineError(n, "line", "more than one JSON value on the line"), null);
        }
        catch (JsonException e)
        {
            return (default, LineError(n, "line", $"not valid JSON ({e.Message})"), null);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return (default, LineError(n, "line", "expected a JSON object"), null);
            if (!root.TryGetProperty("custom_id", out var cid) || cid.ValueKind != JsonValueKind.String || cid.GetString() is not { Length: > 0 and <= 512 } customId)
                return (default, LineError(n, "custom_id", "expected a string of 1 to 512 characters"), null);
            if (!ids.Add(customId)) return (default, LineError(n, "custom_id", $"'{Clip(customId)}' is used by an earlier line; every line needs its own"), null);
            if (!root.TryGetProperty("method", out var m) || m.ValueKind != JsonValueKind.String || m.GetString() != "POST")
                return (default, LineError(n, "method", "expected \"POST\""), null);
            if (!root.TryGetProperty("url", out var u) || u.ValueKind != JsonValueKind.String || u.GetString() != ChatEndpoint)
                return (default, LineError(n, "url", $"expected \"{ChatEndpoint}\" (the endpoint Bursar meters batches of)"), null);
            if (!root.TryGetProperty("body", out var body) || body.ValueKind != JsonValueKind.Object)
                return (default, LineError(n, "body", "expected the request body as a JSON object"), null);
            var raw = System.Text.Encoding.UTF8.GetBytes(body.GetRawText());
            var (entry, error, d) = CheckBody(raw, Dialect.OpenAI, customId, model, e => LineError(n, "body." + (e.Param ?? "body"), Unsentence(e.Message)));
            if (error is null && d!.Dialect == Dialect.Anthropic && !AnthropicCustomId().IsMatch(customId))
                return (default, LineError(n, "custom_id", $"'{Clip(customId)}' cannot name a request of the Anthropic message batch the model '{Clip(entry.Model)}' needs: it takes 1 to 64 characters of [A-Za-z0-9_-]"), null);
            if (error is null) model ??= entry.Model;
            return (entry, error, d);
        }
    }

    /// <summary>One request body: the synchronous call's scan, no stream, served by one deployment of this dialect, the same model (OpenAI).</summary>
    private (ManifestLine Entry, ProviderError? Error, UpstreamDeployment? Deployment) CheckBody(ReadOnlySpan<byte> body, Dialect dialect, string customId, string? sameModel, Func<ProviderError, ProviderError> named)
    {
        var scan = RequestScan.Run(body, dialect);
        if (scan.Error is { } e) return (default, named(e), null);
        if (scan.Stream) return (default, named(ProviderError.BadRequest("streaming is not supported in batches", "stream")), null);
        var model = scan.Model!;
        if (dialect == Dialect.OpenAI && sameModel is not null && model != sameModel)
            return (default, named(ProviderError.BadRequest($"every line of a batch file must use the same model: this one asks for '{Clip(model)}', the first '{Clip(sameModel)}'", "model")), null);
        var deployment = registry.Find(model);
        if (deployment is null)
            return (default, named(ProviderError.BadRequest($"no deployment serves the model '{Clip(model)}'", "model")), null);
        long? maxTokens = scan.MaxTokens;
        if (deployment.Dialect != dialect)
        {
            // a cross-dialect batch: the request must translate as the synchronous call's would, or the line is refused naming the field
            try
            {
                _ = RequestTranslator.Translate(dialect, deployment.Dialect, (JsonObject)JsonNode.Parse(body)!);
                if (deployment.Dialect == Dialect.Anthropic) maxTokens ??= RequestTranslator.DefaultClaudeMaxTokens;
            }
            catch (RequestTranslator.TranslationException t)
            {
                return (default, named(t.Error with { Message = $"{t.Error.Message.TrimEnd('.')} (the model '{Clip(model)}' is served by the {deployment.Dialect.Name()} deployment '{deployment.Name}', so this request is translated)" }), null);
            }
        }
        var price = catalog.Find(model).Price;
        var output = (maxTokens ?? price?.MaxOutputTokens ?? AdmissionControl.DefaultMaxOutputTokens) * Math.Max(1, scan.Choices);
        var worst = BatchLedger.WorstCase(price, admission.InputBound(model, price, scan.InputTokenBound), output);
        return (new ManifestLine(customId, model, worst), null, deployment);
    }

    /// <summary>Checks an Anthropic <c>{"requests":[…]}</c> body: every request, each error naming <c>requests.{i}.…</c> as Anthropic does.</summary>
    public (BatchInputSummary? Summary, ProviderError? Error) CheckAnthropic(ReadOnlySpan<byte> body)
    {
        static ProviderError At(string path, string detail) => ProviderError.BadRequest($"{path}: {detail}", path) with { Code = "invalid_batch_request" };
        JsonDocument doc;
        try
        {
            var reader = new Utf8JsonReader(body);
            doc = JsonDocument.ParseValue(ref reader);
        }
        catch (JsonException e)
        {
            return (null, ProviderError.BadRequest($"The request body is not valid JSON: {e.Message}"));
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("requests", out var requests) || requests.ValueKind != JsonValueKind.Array)
                return (null, At("requests", "Field required (an array of {\"custom_id\", \"params\"})"));
            var count = requests.GetArrayLength();
            if (count == 0) return (null, At("requests", "List should have at least 1 item after validation, not 0"));
            if (count > options.MaxAnthropicRequests) return (null, At("requests", $"List should have at most {options.MaxAnthropicRequests} items after validation, not {count}"));
            var ids = new HashSet<string>(StringComparer.Ordinal);
            var lines = new List<ManifestLine>(count);
            UpstreamDeployment? deployment = null;
            var i = 0;
            foreach (var r in requests.EnumerateArray())
            {
                var at = $"requests.{i}";
                if (r.ValueKind != JsonValueKind.Object) return (null, At(at, "Input should be a valid dictionary"));
                if (!r.TryGetProperty("custom_id", out var cid) || cid.ValueKind != JsonValueKind.String) return (null, At(at + ".custom_id", "Field required"));
                var customId = cid.GetString()!;
                if (customId.Length > 64) return (null, At(at + ".custom_id", "String should have at most 64 characters"));
                if (!AnthropicCustomId().IsMatch(customId)) return (null, At(at + ".custom_id", "String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"));
                if (!ids.Add(customId)) return (null, At(at + ".custom_id", $"'{customId}' is used by an earlier request; every request needs its own"));
                if (!r.TryGetProperty("params", out var p) || p.ValueKind != JsonValueKind.Object) return (null, At(at + ".params", "Field required"));
                var raw = System.Text.Encoding.UTF8.GetBytes(p.GetRawText());
                var (entry, error, d) = CheckBody(raw, Dialect.Anthropic, customId, null, e => At($"{at}.params.{e.Param ?? "body"}", Unsentence(e.Message)));
                if (error is not null) return (null, error);
                if (deployment is not null && d != deployment)
                    return (null, At(at + ".params.model", $"every request of a batch must be served by one deployment: '{Clip(entry.Model)}' is served by '{d!.Name}', the first request's model by '{deployment.Name}'"));
                if (d!.Dialect == Dialect.OpenAI && lines.Count > 0 && lines[0].Model != entry.Model)
                    return (null, At(at + ".params.model", $"the OpenAI batch these requests become takes one model: '{Clip(entry.Model)}' differs from the first request's '{Clip(lines[0].Model)}'"));
                deployment ??= d;
                lines.Add(entry);
                i++;
            }
            return (new BatchInputSummary(deployment!, null, lines, body.Length), null);
        }
    }

    /// <summary>
    /// Reads <paramref name="source"/> to its end, copying every byte to <paramref name="spool"/> and handing each line (without its
    /// newline) to <paramref name="line"/>; a line longer than <see cref="BatchOptions.MaxLineBytes"/> or a file longer than
    /// <see cref="BatchOptions.MaxFileBytes"/> ends it with an error, as does the first error <paramref name="line"/> returns.
    /// </summary>
    private async Task<(long Bytes, ProviderError? Error)> SplitLinesAsync(Stream source, Stream spool, LineCheck line, CancellationToken ct)
    {
        var chunk = ArrayPool<byte>.Shared.Rent(64 * 1024);
        var pending = ArrayPool<byte>.Shared.Rent(64 * 1024);
        var pendingLength = 0;
        long total = 0;
        var lineNo = 1;
        try
        {
            int read;
            while ((read = await source.ReadAsync(chunk.AsMemory(0, 64 * 1024), ct).ConfigureAwait(false)) > 0)
            {
                total += read;
                if (total > options.MaxFileBytes)
                    return (total, ProviderError.TooLarge($"The batch input file exceeds the limit of {options.MaxFileBytes} bytes (Bursar:Batch:MaxFileBytes).") with { Param = "file" });
                await spool.WriteAsync(chunk.AsMemory(0, read), ct).ConfigureAwait(false);
                var start = 0;
                while (start < read)
                {
                    var nl = Array.IndexOf(chunk, (byte)'\n', start, read - start);
                    var end = nl < 0 ? read : nl;
                    var piece = end - start;
                    if (pendingLength + piece > options.MaxLineBytes)
                        return (total, LineError(lineNo, "line", $"the line is longer than {options.MaxLineBytes} bytes (Bursar:Batch:MaxLineBytes)"));
                    if (pendingLength + piece > pending.Length)
                    {
                        var bigger = ArrayPool<byte>.Shared.Rent(Math.Min(options.MaxLineBytes, Math.Max(pending.Length * 2, pendingLength + piece)));
                        pending.AsSpan(0, pendingLength).CopyTo(bigger);
                        ArrayPool<byte>.Shared.Return(pending);
                        pending = bigger;
                    }
                    chunk.AsSpan(start, piece).CopyTo(pending.AsSpan(pendingLength));
                    pendingLength += piece;
                    if (nl < 0) break;
                    if (line(pending.AsSpan(0, pendingLength)) is { } error) return (total, error);
                    pendingLength = 0;
                    lineNo++;
                    start = nl + 1;
                }
            }
            if (pendingLength > 0 && line(pending.AsSpan(0, pendingLength)) is { } last) return (total, last);
            return (total, null);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
            ArrayPool<byte>.Shared.Return(pending);
        }
    }

    private delegate ProviderError? LineCheck(ReadOnlySpan<byte> line);

    private static string Clip(string s) => s.Length <= 80 ? s : s[..80] + "…";

    /// <summary>A scan's message as a clause: no trailing period (the line error adds its own).</summary>
    private static string Unsentence(string message) => message.TrimEnd('.');
}
