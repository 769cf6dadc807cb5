using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;
using Bursar.Providers.Dialects;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Net.Http.Headers;

namespace Bursar.Providers.Simulator;

/// <summary>
/// The batch APIs of both providers (PROVIDER_API.md §3 and §6): OpenAI Files (uploads streamed to disk) and Batches,
/// Anthropic Message Batches. A batch ends at its first poll after <see cref="SimulatorOptions.BatchProcessingTime"/>;
/// every request is then answered by the same handler a synchronous call gets, its usage billed at the batch rate
/// (<see cref="BatchBilledUsd"/>). A request whose text holds <c>[[sim:batch=error]]</c> errors, one with
/// <c>[[sim:batch=expire]]</c> expires, one with <c>[[sim:batch=reject]]</c> fails its OpenAI batch at validation (an
/// Anthropic batch is refused with a 400); a batch whose processing time reaches its 24-hour window expires whole.
/// </summary>
public sealed partial class ProviderSimulator
{
    /// <summary>OpenAI's batch limits: requests per input file, and the completion window every batch has.</summary>
    public const int MaxOpenAIBatchRequests = 50_000;
    public const int MaxAnthropicBatchRequests = 100_000;
    public static readonly TimeSpan BatchCompletionWindow = TimeSpan.FromHours(24);

    private static readonly string[] FilePurposes = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"];
    private static readonly string[] BatchEndpoints = ["/v1/chat/completions", "/v1/embeddings"];

    private SimulatorBatchStore? _batchStore;

    private SimulatorBatchStore BatchStore => LazyInitializer.EnsureInitialized(ref _batchStore,
        () => new SimulatorBatchStore(_options.BatchDirectory ?? Path.Combine(Path.GetTempPath(), "bursar-sim-batches-" + Guid.NewGuid().ToString("N"))));

    /// <summary>Whether the host should hand this request's body over as a stream (<see cref="SimulatorExchange.BodyStream"/>): file uploads.</summary>
    public static bool StreamsRequestBody(string method, string path) =>
        method.Equals("POST", StringComparison.OrdinalIgnoreCase) && path.TrimEnd('/').Equals("/v1/files", StringComparison.Ordinal);

    /// <summary>What the Simulator billed for a batch's succeeded requests at the batch rate (null: no such batch).</summary>
    public decimal? BatchBilledUsd(string batchId) => BatchStore.Batch(batchId)?.BilledUsd;

    /// <summary>The ids of the batches the Simulator holds (both dialects).</summary>
    public IReadOnlyList<string> BatchIds => [.. BatchStore.Batches("openai").Concat(BatchStore.Batches("anthropic")).Select(b => b.Id)];

    /// <summary>Called after a batch is accepted and before its answer is written (a test's kill point: the provider holds a batch the caller never heard of).</summary>
    public Action<string>? BatchAccepted { get; set; }

    private string NewBatchId(string prefix) => prefix + Guid.CreateVersion7(_time.GetUtcNow()).ToString("N");

    /// <summary>Serves the batch endpoints; false when <paramref name="path"/> is none of them.</summary>
    private async Task<bool> BatchRouteAsync(SimulatorExchange x, string path, CancellationToken ct)
    {
        var seg = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (seg.Length < 2 || seg[0] != "v1") return false;
        switch (x.Method, seg.Length, seg[1])
        {
            case ("POST", 2, "files"):
                await UploadFileAsync(x, ct).ConfigureAwait(false);
                return true;
            case ("GET", 2, "files"):
                OpenAIKey(x);
                await WriteListAsync(x, w => { foreach (var f in BatchStore.Files.OrderByDescending(f => f.CreatedAt)) FileObject(w, f); }, w => w.WriteBoolean("has_more", false), ct).ConfigureAwait(false);
                return true;
            case ("GET", 3, "files"):
                OpenAIKey(x);
                await WriteObjectAsync(x, w => FileFields(w, FindFile(seg[2])), ct).ConfigureAwait(false);
                return true;
            case ("GET", 4, "files") when seg[3] == "content":
                OpenAIKey(x);
                await FileContentAsync(x, FindFile(seg[2]), ct).ConfigureAwait(false);
                return true;
            case ("DELETE", 3, "files"):
                OpenAIKey(x);
                var file = FindFile(seg[2]);
                BatchStore.Delete(file);
                await WriteObjectAsync(x, w => { w.WriteString("id", file.Id); w.WriteString("object", "file"); w.WriteBoolean("deleted", true); }, ct).ConfigureAwait(false);
                return true;
            case ("POST", 2, "batches"):
                await CreateOpenAIBatchAsync(x, ct).ConfigureAwait(false);
                return true;
            case ("GET", 2, "batches"):
                OpenAIKey(x);
                await ListOpenAIBatchesAsync(x, ct).ConfigureAwait(false);
                return true;
            case ("GET", 3, "batches"):
            {
                OpenAIKey(x);
                var b = FindBatch(Dialect.OpenAI, seg[2]);
                await AdvanceAsync(b, ct).ConfigureAwait(false);
                await WriteObjectAsync(x, w => OpenAIBatchFields(w, b), ct).ConfigureAwait(false);
                return true;
            }
            case ("POST", 4, "batches") when seg[3] == "cancel":
            {
                OpenAIKey(x);
                var b = await CancelAsync(Dialect.OpenAI, seg[2], ct).ConfigureAwait(false);
                await WriteObjectAsync(x, w => OpenAIBatchFields(w, b), ct).ConfigureAwait(false);
                return true;
            }
            case (_, >= 3, "messages") when seg[2] == "batches":
                return await AnthropicBatchRouteAsync(x, seg, ct).ConfigureAwait(false);
            default:
                return false;
        }
    }

    private async Task<bool> AnthropicBatchRouteAsync(SimulatorExchange x, string[] seg, CancellationToken ct)
    {
        const Dialect d = Dialect.Anthropic;
        switch (x.Method, seg.Length)
        {
            case ("POST", 3):
                await CreateAnthropicBatchAsync(x, ct).ConfigureAwait(false);
                return true;
            case ("GET", 3):
                AnthropicKey(x);
                await ListAnthropicBatchesAsync(x, ct).ConfigureAwait(false);
                return true;
            case ("GET", 4):
            {
                AnthropicKey(x);
                var b = FindBatch(d, seg[3]);
                await AdvanceAsync(b, ct).ConfigureAwait(false);
                await WriteObjectAsync(x, w => AnthropicBatchFields(w, b, x), ct).ConfigureAwait(false);
                return true;
            }
            case ("GET", 5) when seg[4] == "results":
            {
                AnthropicKey(x);
                var b = FindBatch(d, seg[3]);
                await AdvanceAsync(b, ct).ConfigureAwait(false);
                if (!b.Ended || b.ResultsPath is null)
                    throw Bad(d, $"Batch {b.Id} has not ended yet (processing_status {AnthropicStatus(b)}): its results are not available.");
                x.SetStatus(200);
                x.SetHeader("content-type", "application/binary");
                await StreamFileAsync(x, b.ResultsPath, ct).ConfigureAwait(false);
                return true;
            }
            case ("POST", 5) when seg[4] == "cancel":
            {
                AnthropicKey(x);
                var b = await CancelAsync(d, seg[3], ct).ConfigureAwait(false);
                await WriteObjectAsync(x, w => AnthropicBatchFields(w, b, x), ct).ConfigureAwait(false);
                return true;
            }
            case ("DELETE", 4):
            {
                AnthropicKey(x);
                var b = FindBatch(d, seg[3]);
                await AdvanceAsync(b, ct).ConfigureAwait(false);
                if (!b.Ended) throw Bad(d, $"Batch {b.Id} is still {AnthropicStatus(b)}: only a batch that has ended can be deleted; cancel it first.");
                BatchStore.Delete(b);
                await WriteObjectAsync(x, w => { w.WriteString("id", b.Id); w.WriteString("type", "message_batch_deleted"); }, ct).ConfigureAwait(false);
                return true;
            }
            default:
                return false;
        }
    }

    private static void OpenAIKey(SimulatorExchange x)
    {
        var auth = x.Header("authorization");
        if (string.IsNullOrEmpty(auth) || !auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            throw new SimulatorRequestException(Dialect.OpenAI, ProviderError.Unauthorized("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth."));
    }

    private static void AnthropicKey(SimulatorExchange x)
    {
        if (string.IsNullOrEmpty(x.Header("x-api-key")) && string.IsNullOrEmpty(x.Header("authorization")))
            throw new SimulatorRequestException(Dialect.Anthropic, new ProviderError(401, "x-api-key header is required"));
    }

    private SimFile FindFile(string id) => BatchStore.File(id)
        ?? throw new SimulatorRequestException(Dialect.OpenAI, new ProviderError(404, $"No such File object: {id}") { Param = "id" });

    private SimBatch FindBatch(Dialect d, string id) =>
        BatchStore.Batch(id) is { } b && b.Dialect == d.Name() ? b
        : throw new SimulatorRequestException(d, new ProviderError(404, d == Dialect.OpenAI ? $"No batch found with id '{id}'." : $"No message batch found with id '{id}'.") { Param = d == Dialect.OpenAI ? "batch_id" : null });

    // ---------------------------------------------------------------- OpenAI Files

    private async Task UploadFileAsync(SimulatorExchange x, CancellationToken ct)
    {
        const Dialect d = Dialect.OpenAI;
        OpenAIKey(x);
        var contentType = x.Header("content-type");
        if (contentType is null || !MediaTypeHeaderValue.TryParse(contentType, out var media) || !media.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase))
            throw Bad(d, "The request must be multipart/form-data with the fields 'file' and 'purpose'.", "file");
        var boundary = HeaderUtilities.RemoveQuotes(media.Boundary).Value;
        if (string.IsNullOrEmpty(boundary) || boundary.Length > 200) throw Bad(d, "The multipart/form-data content type names no valid boundary.", "file");
        var id = NewBatchId("file-");
        var path = BatchStore.DataPath(id);
        string? purpose = null, filename = null;
        long bytes = -1;
        try
        {
            var reader = new MultipartReader(boundary, x.BodyStream ?? new MemoryStream(x.Body.ToArray()));
            while (await reader.ReadNextSectionAsync(ct).ConfigureAwait(false) is { } section)
            {
                var disposition = section.GetContentDispositionHeader();
                var name = disposition is null ? null : HeaderUtilities.RemoveQuotes(disposition.Name).Value;
                if (name == "purpose")
                {
                    using var text = new StreamReader(section.Body, Encoding.UTF8);
                    var buffer = new char[65];
                    var n = await text.ReadBlockAsync(buffer, ct).ConfigureAwait(false);
                    purpose = new string(buffer, 0, n).Trim();
                }
                else if (name == "file")
                {
                    filename = HeaderUtilities.RemoveQuotes(disposition!.FileName).Value ?? "upload.jsonl";
                    await using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 64 * 1024, useAsync: true);
                    bytes = await CopyLimitedAsync(section.Body, file, _options.BatchMaxFileBytes, ct).ConfigureAwait(false);
                    if (bytes < 0)
                        throw new SimulatorRequestException(d, ProviderError.TooLarge($"File too large: the limit is {_options.BatchMaxFileBytes} bytes.") with { Param = "file" });
                }
                else
                {
                    await section.Body.CopyToAsync(Stream.Null, ct).ConfigureAwait(false);
                }
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException && !ct.IsCancellationRequested)
        {
            File.Delete(path);
            throw Bad(d, $"The multipart/form-data body cannot be read: {e.Message}", "file");
        }
        catch
        {
            File.Delete(path);
            throw;
        }
        if (filename is null || bytes < 0)
        {
            File.Delete(path);
            throw Bad(d, "Missing required parameter: 'file'.", "file");
        }
        if (purpose is null || !FilePurposes.Contains(purpose, StringComparer.Ordinal))
        {
            File.Delete(path);
            throw Bad(d, purpose is null ? "Missing required parameter: 'purpose'." : $"Invalid value for 'purpose': '{Truncate(purpose, 64)}'. Supported values are: {string.Join(", ", FilePurposes.Select(p => $"'{p}'"))}.", "purpose");
        }
        var f = new SimFile { Id = id, Filename = Truncate(filename, 255), Purpose = purpose, Bytes = bytes, CreatedAt = _time.GetUtcNow().ToUnixTimeSeconds(), Path = path };
        BatchStore.Save(f);
        await WriteObjectAsync(x, w => FileFields(w, f), ct).ConfigureAwait(false);
    }

    /// <summary>Copies at most <paramref name="limit"/> bytes; -1 when the source holds more.</summary>
    private static async Task<long> CopyLimitedAsync(Stream from, Stream to, long limit, CancellationToken ct)
    {
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            long total = 0;
            int n;
            while ((n = await from.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                total += n;
                if (total > limit) return -1;
                await to.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
            }
            return total;
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static void FileObject(Utf8JsonWriter w, SimFile f)
    {
        w.WriteStartObject();
        FileFields(w, f);
        w.WriteEndObject();
    }

    private static void FileFields(Utf8JsonWriter w, SimFile f)
    {
        w.WriteString("id", f.Id);
        w.WriteString("object", "file");
        w.WriteNumber("bytes", f.Bytes);
        w.WriteNumber("created_at", f.CreatedAt);
        w.WriteString("filename", f.Filename);
        w.WriteString("purpose", f.Purpose);
        w.WriteString("status", "processed");
        w.WriteNull("expires_at");
        w.WriteNull("status_details");
    }

    private static async Task FileContentAsync(SimulatorExchange x, SimFile f, CancellationToken ct)
    {
        x.SetStatus(200);
        x.SetHeader("content-type", "application/octet-stream");
        await StreamFileAsync(x, f.Path, ct).ConfigureAwait(false);
    }

    private static async Task StreamFileAsync(SimulatorExchange x, string path, CancellationToken ct)
    {
        await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 64 * 1024, useAsync: true);
        var buffer = new byte[64 * 1024];
        int n;
        var wrote = false;
        while ((n = await file.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
        {
            await x.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
            wrote = true;
        }
        if (!wrote) await x.WriteAsync(ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- OpenAI Batches

    private async Task CreateOpenAIBatchAsync(SimulatorExchange x, CancellationToken ct)
    {
        const Dialect d = Dialect.OpenAI;
        var body = ParseBody(x, d);
        OpenAIKey(x);
        var fileId = body["input_file_id"] is JsonValue fv && fv.TryGetValue<string>(out var fid) ? fid : throw Bad(d, "Missing required parameter: 'input_file_id'.", "input_file_id");
        var endpoint = body["endpoint"] is JsonValue ev && ev.TryGetValue<string>(out var ep) ? ep : throw Bad(d, "Missing required parameter: 'endpoint'.", "endpoint");
        if (!BatchEndpoints.Contains(endpoint, StringComparer.Ordinal))
            throw Bad(d, $"Invalid value for 'endpoint': '{Truncate(endpoint, 64)}'. The Simulator's batches serve {string.Join(", ", BatchEndpoints)}.", "endpoint");
        if (body["completion_window"] is not JsonValue cw || !cw.TryGetValue<string>(out var window) || window != "24h")
            throw Bad(d, "Invalid value for 'completion_window': the only supported value is '24h'.", "completion_window");
        if (body["metadata"] is { } md && (md is not JsonObject mo || mo.Count > 16 || mo.Any(p => p.Key.Length > 64 || p.Value is not JsonValue v || !v.TryGetValue<string>(out var s) || s.Length > 512)))
            throw Bad(d, "Invalid 'metadata': expected an object of at most 16 string values (keys up to 64 characters, values up to 512).", "metadata");
        var file = BatchStore.File(fileId) ?? throw new SimulatorRequestException(d, new ProviderError(404, $"No such File object: {fileId}") { Param = "input_file_id" });
        if (file.Purpose != "batch") throw Bad(d, $"File {file.Id} has purpose '{file.Purpose}': a batch input file must be uploaded with purpose 'batch'.", "input_file_id");
        var now = _time.GetUtcNow();
        var b = new SimBatch
        {
            Id = NewBatchId("batch_"), Dialect = "openai", InputPath = file.Path, InputFileId = file.Id, Endpoint = endpoint, CompletionWindow = window,
            Metadata = body["metadata"]?.ToJsonString(), CreatedAt = now, ExpiresAt = now + BatchCompletionWindow,
        };
        var (total, model, errors) = await ValidateInputAsync(file.Path, endpoint, ct).ConfigureAwait(false);
        b.Total = total;
        b.Model = model;
        if (errors.Count > 0)
        {
            b.Status = "failed";
            b.EndedAt = now;
            b.Errors = errors.ToJsonString();
        }
        BatchStore.Save(b);
        BatchAccepted?.Invoke(b.Id);
        if (_options.BatchAcceptDelay > TimeSpan.Zero) await Task.Delay(_options.BatchAcceptDelay, _time, ct).ConfigureAwait(false);
        await WriteObjectAsync(x, w => OpenAIBatchFields(w, b), ct).ConfigureAwait(false);
    }

    /// <summary>OpenAI's checks of an input file, line by line: JSON, a unique custom_id, POST to the batch's endpoint, one model.</summary>
    private static async Task<(int Total, string? Model, JsonArray Errors)> ValidateInputAsync(string path, string endpoint, CancellationToken ct)
    {
        var errors = new JsonArray();
        var ids = new HashSet<string>(StringComparer.Ordinal);
        string? model = null;
        var line = 0;
        var total = 0;
        void Error(string code, string message, string? param)
        {
            if (errors.Count < 100) errors.Add(new JsonObject { ["code"] = code, ["line"] = line, ["message"] = message, ["param"] = param });
        }
        using var reader = new StreamReader(path, Encoding.UTF8);
        while (await reader.ReadLineAsync(ct).ConfigureAwait(false) is { } text)
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            total++;
            JsonNode? node;
            try
            {
                node = JsonNode.Parse(text);
            }
            catch (JsonException)
            {
                Error("invalid_json_line", $"Line {line} is not valid JSON.", null);
                continue;
            }
            if (node is not JsonObject o)
            {
                Error("invalid_json_line", $"Line {line} is not a JSON object.", null);
                continue;
            }
            if (o["custom_id"] is not JsonValue cv || !cv.TryGetValue<string>(out var cid) || cid.Length == 0) Error("missing_required_parameter", "Missing required parameter: 'custom_id'.", "custom_id");
            else if (!ids.Add(cid)) Error("duplicate_custom_id", $"The custom_id '{cid}' is used more than once in this file.", "custom_id");
            if (o["method"] is not JsonValue mv || !mv.TryGetValue<string>(out var method) || method != "POST") Error("invalid_method", "Invalid value for 'method': batch requests must use POST.", "method");
            if (o["url"] is not JsonValue uv || !uv.TryGetValue<string>(out var url) || url != endpoint) Error("invalid_url", $"Invalid value for 'url': every request must go to the batch's endpoint '{endpoint}'.", "url");
            if (o["body"] is not JsonObject body) Error("missing_required_parameter", "Missing required parameter: 'body'.", "body");
            else if (body["model"] is not JsonValue bm || !bm.TryGetValue<string>(out var m)) Error("missing_required_parameter", "Missing required parameter: 'body.model'.", "body.model");
            else if (model is null) model = m;
            else if (m != model) Error("mismatched_model", $"Every request of a batch file must use the same model: line {line} uses '{m}', the file's first request '{model}'.", "body.model");
            if (text.Contains("[[sim:batch=reject]]", StringComparison.Ordinal)) Error("invalid_request", "Simulated validation failure ([[sim:batch=reject]]).", "body");
            if (o["body"] is JsonObject sb && sb["stream"] is JsonValue st && st.TryGetValue<bool>(out var stream) && stream) Error("invalid_request", "Streaming is not supported in batches.", "body.stream");
        }
        if (total == 0) Error("empty_file", "The input file holds no requests.", null);
        if (total > MaxOpenAIBatchRequests) Error("too_many_requests", $"The input file holds {total} requests; a batch takes at most {MaxOpenAIBatchRequests}.", null);
        return (total, model, errors);
    }

    private async Task ListOpenAIBatchesAsync(SimulatorExchange x, CancellationToken ct)
    {
        var q = QueryHelpers.ParseQuery(x.Query);
        var limit = 20;
        if (q.TryGetValue("limit", out var lv) && (!int.TryParse(lv.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > 100))
            throw Bad(Dialect.OpenAI, "Invalid 'limit': expected an integer from 1 to 100.", "limit");
        var all = BatchStore.Batches("openai").ToList();
        var start = q.TryGetValue("after", out var after) && all.FindIndex(b => b.Id == after.ToString()) is var i and >= 0 ? i + 1 : 0;
        var page = all.Skip(start).Take(limit).ToList();
        foreach (var b in page) await AdvanceAsync(b, ct).ConfigureAwait(false);
        await WriteListAsync(x, w => { foreach (var b in page) { w.WriteStartObject(); OpenAIBatchFields(w, b); w.WriteEndObject(); } }, w =>
        {
            if (page.Count > 0) { w.WriteString("first_id", page[0].Id); w.WriteString("last_id", page[^1].Id); }
            else { w.WriteNull("first_id"); w.WriteNull("last_id"); }
            w.WriteBoolean("has_more", start + page.Count < all.Count);
        }, ct).ConfigureAwait(false);
    }

    private static void OpenAIBatchFields(Utf8JsonWriter w, SimBatch b)
    {
        static void At(Utf8JsonWriter w, string name, DateTimeOffset? t)
        {
            if (t is { } v) w.WriteNumber(name, v.ToUnixTimeSeconds()); else w.WriteNull(name);
        }
        w.WriteString("id", b.Id);
        w.WriteString("object", "batch");
        w.WriteString("endpoint", b.Endpoint);
        if (b.Errors is { } errors)
        {
            w.WriteStartObject("errors");
            w.WriteString("object", "list");
            w.WritePropertyName("data");
            w.WriteRawValue(errors);
            w.WriteEndObject();
        }
        else
        {
            w.WriteNull("errors");
        }
        w.WriteString("input_file_id", b.InputFileId);
        w.WriteString("completion_window", b.CompletionWindow);
        w.WriteString("status", b.Status);
        if (b.OutputFileId is null) w.WriteNull("output_file_id"); else w.WriteString("output_file_id", b.OutputFileId);
        if (b.ErrorFileId is null) w.WriteNull("error_file_id"); else w.WriteString("error_file_id", b.ErrorFileId);
        w.WriteNumber("created_at", b.CreatedAt.ToUnixTimeSeconds());
        At(w, "in_progress_at", b.Status == "failed" ? null : b.CreatedAt);
        w.WriteNumber("expires_at", b.ExpiresAt.ToUnixTimeSeconds());
        At(w, "finalizing_at", b.Status == "completed" ? b.EndedAt : null);
        At(w, "completed_at", b.Status == "completed" ? b.EndedAt : null);
        At(w, "failed_at", b.Status == "failed" ? b.EndedAt : null);
        At(w, "expired_at", b.Status == "expired" ? b.EndedAt : null);
        At(w, "cancelling_at", b.CancelAt);
        At(w, "cancelled_at", b.Status == "cancelled" ? b.EndedAt : null);
        w.WriteStartObject("request_counts");
        w.WriteNumber("total", b.Total);
        w.WriteNumber("completed", b.Succeeded);
        w.WriteNumber("failed", b.Errored + b.Expired + b.Canceled);
        w.WriteEndObject();
        if (b.Metadata is { } md) { w.WritePropertyName("metadata"); w.WriteRawValue(md); } else w.WriteNull("metadata");
        if (b.Model is null) w.WriteNull("model"); else w.WriteString("model", b.Model);
        w.WriteStartObject("usage");
        w.WriteNumber("input_tokens", b.InputTokens);
        w.WriteStartObject("input_tokens_details");
        w.WriteNumber("cached_tokens", b.CachedTokens);
        w.WriteEndObject();
        w.WriteNumber("output_tokens", b.OutputTokens);
        w.WriteStartObject("output_tokens_details");
        w.WriteNumber("reasoning_tokens", b.ReasoningTokens);
        w.WriteEndObject();
        w.WriteNumber("total_tokens", b.InputTokens + b.OutputTokens);
        w.WriteEndObject();
    }

    // ---------------------------------------------------------------- Anthropic Message Batches

    [GeneratedRegex("^[A-Za-z0-9_-]{1,64}$")]
    private static partial Regex CustomIdPattern();

    private async Task CreateAnthropicBatchAsync(SimulatorExchange x, CancellationToken ct)
    {
        const Dialect d = Dialect.Anthropic;
        var body = ParseBody(x, d);
        AnthropicKey(x);
        if (body["requests"] is not JsonArray requests) throw Bad(d, "requests: Field required");
        if (requests.Count == 0) throw Bad(d, "requests: List should have at least 1 item after validation, not 0");
        if (requests.Count > MaxAnthropicBatchRequests) throw Bad(d, $"requests: List should have at most {MaxAnthropicBatchRequests} items after validation, not {requests.Count}");
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < requests.Count; i++)
        {
            if (requests[i] is not JsonObject r) throw Bad(d, $"requests.{i}: Input should be a valid dictionary");
            if (r["custom_id"] is not JsonValue cv || !cv.TryGetValue<string>(out var cid)) throw Bad(d, $"requests.{i}.custom_id: Field required");
            if (cid.Length > 64) throw Bad(d, $"requests.{i}.custom_id: String should have at most 64 characters");
            if (!CustomIdPattern().IsMatch(cid)) throw Bad(d, $"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'");
            if (!ids.Add(cid)) throw Bad(d, $"requests.{i}.custom_id: Duplicate custom_id '{cid}': every request of a batch needs its own.");
            if (r["params"] is not JsonObject p) throw Bad(d, $"requests.{i}.params: Field required");
            if (p.ToJsonString().Contains("[[sim:batch=reject]]", StringComparison.Ordinal)) throw Bad(d, $"requests.{i}.params: Simulated rejection ([[sim:batch=reject]]).");
            if (p["max_tokens"] is JsonValue mt && mt.TryGetValue<long>(out var max) && max < 1) throw Bad(d, $"requests.{i}.params.max_tokens: Input should be greater than or equal to 1");
        }
        var now = _time.GetUtcNow();
        var id = NewBatchId("msgbatch_");
        var path = BatchStore.DataPath(id + ".requests");
        await using (var file = new StreamWriter(path, false, new UTF8Encoding(false)))
            foreach (var r in requests) await file.WriteLineAsync(r!.ToJsonString().AsMemory(), ct).ConfigureAwait(false);
        var b = new SimBatch { Id = id, Dialect = "anthropic", InputPath = path, CreatedAt = now, ExpiresAt = now + BatchCompletionWindow, Total = requests.Count };
        BatchStore.Save(b);
        BatchAccepted?.Invoke(b.Id);
        if (_options.BatchAcceptDelay > TimeSpan.Zero) await Task.Delay(_options.BatchAcceptDelay, _time, ct).ConfigureAwait(false);
        await WriteObjectAsync(x, w => AnthropicBatchFields(w, b, x), ct).ConfigureAwait(false);
    }

    private async Task ListAnthropicBatchesAsync(SimulatorExchange x, CancellationToken ct)
    {
        var q = QueryHelpers.ParseQuery(x.Query);
        var limit = 20;
        if (q.TryGetValue("limit", out var lv) && (!int.TryParse(lv.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > 1000))
            throw Bad(Dialect.Anthropic, "limit: Input should be less than or equal to 1000 and greater than or equal to 1");
        var all = BatchStore.Batches("anthropic").ToList();
        var start = 0;
        var end = all.Count;
        if (q.TryGetValue("after_id", out var after) && all.FindIndex(b => b.Id == after.ToString()) is var i and >= 0) start = i + 1;
        if (q.TryGetValue("before_id", out var before) && all.FindIndex(b => b.Id == before.ToString()) is var j and >= 0) end = j;
        var page = all.Skip(start).Take(Math.Max(0, Math.Min(limit, end - start))).ToList();
        foreach (var b in page) await AdvanceAsync(b, ct).ConfigureAwait(false);
        await WriteObjectAsync(x, w =>
        {
            w.WriteStartArray("data");
            foreach (var b in page) { w.WriteStartObject(); AnthropicBatchFields(w, b, x); w.WriteEndObject(); }
            w.WriteEndArray();
            w.WriteBoolean("has_more", start + page.Count < end);
            if (page.Count > 0) { w.WriteString("first_id", page[0].Id); w.WriteString("last_id", page[^1].Id); }
            else { w.WriteNull("first_id"); w.WriteNull("last_id"); }
        }, ct).ConfigureAwait(false);
    }

    private static string AnthropicStatus(SimBatch b) => b.Ended ? "ended" : b.Status == "cancelling" ? "canceling" : "in_progress";

    private static void AnthropicBatchFields(Utf8JsonWriter w, SimBatch b, SimulatorExchange x)
    {
        static void At(Utf8JsonWriter w, string name, DateTimeOffset? t)
        {
            if (t is { } v) w.WriteString(name, v.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture)); else w.WriteNull(name);
        }
        w.WriteString("id", b.Id);
        w.WriteString("type", "message_batch");
        w.WriteString("processing_status", AnthropicStatus(b));
        w.WriteStartObject("request_counts");
        w.WriteNumber("processing", b.Ended ? 0 : b.Total);
        w.WriteNumber("succeeded", b.Succeeded);
        w.WriteNumber("errored", b.Errored);
        w.WriteNumber("canceled", b.Canceled);
        w.WriteNumber("expired", b.Expired);
        w.WriteEndObject();
        At(w, "created_at", b.CreatedAt);
        At(w, "expires_at", b.ExpiresAt);
        At(w, "ended_at", b.Ended ? b.EndedAt : null);
        At(w, "cancel_initiated_at", b.CancelAt);
        w.WriteNull("archived_at");
        if (b.Ended) w.WriteString("results_url", $"http://{x.Header("host") ?? "simulator"}/v1/messages/batches/{b.Id}/results");
        else w.WriteNull("results_url");
    }

    // ---------------------------------------------------------------- processing

    private async Task<SimBatch> CancelAsync(Dialect d, string id, CancellationToken ct)
    {
        var b = FindBatch(d, id);
        await AdvanceAsync(b, ct).ConfigureAwait(false);
        await b.Gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (b.Ended)
            {
                if (d == Dialect.OpenAI) throw new SimulatorRequestException(d, new ProviderError(409, $"Cannot cancel a batch with status '{b.Status}'.") { Param = "batch_id" });
                return b; // Anthropic answers an ended batch as it is
            }
            if (b.Status != "cancelling")
            {
                b.Status = "cancelling";
                b.CancelAt = _time.GetUtcNow();
                BatchStore.Save(b);
            }
            return b;
        }
        finally
        {
            b.Gate.Release();
        }
    }

    private enum LineFate { Run, Cancel, Expire }

    /// <summary>Ends the batch when its time has come: every request answered, or canceled, or expired.</summary>
    private async Task AdvanceAsync(SimBatch b, CancellationToken ct)
    {
        if (b.Ended) return;
        await b.Gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (b.Ended) return;
            var now = _time.GetUtcNow();
            LineFate fate;
            if (b.Status == "cancelling") fate = LineFate.Cancel;
            else if (_options.BatchProcessingTime >= BatchCompletionWindow) { if (now < b.ExpiresAt) return; fate = LineFate.Expire; }
            else if (now >= b.CreatedAt + _options.BatchProcessingTime) fate = LineFate.Run;
            else return;
            await RunLinesAsync(b, fate, ct).ConfigureAwait(false);
            b.EndedAt = now;
            b.Status = fate switch { LineFate.Cancel => "cancelled", LineFate.Expire => "expired", _ => "completed" };
            BatchStore.Save(b);
        }
        finally
        {
            b.Gate.Release();
        }
    }

    /// <summary>Answers each request line (streamed from disk to the result files, never held whole).</summary>
    private async Task RunLinesAsync(SimBatch b, LineFate fate, CancellationToken ct)
    {
        var openai = b.Dialect == "openai";
        var outId = NewBatchId("file-");
        var errId = NewBatchId("file-");
        var outPath = BatchStore.DataPath(openai ? outId : b.Id + ".results");
        var errPath = BatchStore.DataPath(errId);
        long outCount = 0, errCount = 0;
        b.Succeeded = b.Errored = b.Canceled = b.Expired = 0;
        await using (var output = new StreamWriter(outPath, false, new UTF8Encoding(false)))
        await using (var errorsOut = openai ? new StreamWriter(errPath, false, new UTF8Encoding(false)) : null)
        using (var input = new StreamReader(b.InputPath, Encoding.UTF8))
        {
            while (await input.ReadLineAsync(ct).ConfigureAwait(false) is { } text)
            {
                if (string.IsNullOrWhiteSpace(text)) continue;
                var line = JsonNode.Parse(text)!.AsObject();
                var customId = line["custom_id"]?.GetValue<string>() ?? "";
                var request = (openai ? line["body"] : line["params"]) as JsonObject;
                var lineFate = fate == LineFate.Run && text.Contains("[[sim:batch=expire]]", StringComparison.Ordinal) ? LineFate.Expire : fate;
                string json;
                bool ok = false;
                if (lineFate == LineFate.Run)
                {
                    var (status, answer) = text.Contains("[[sim:batch=error]]", StringComparison.Ordinal)
                        ? (400, ProviderError.BadRequest("Simulated per-request error ([[sim:batch=error]]).").ToJson(openai ? Dialect.OpenAI : Dialect.Anthropic, "req_sim_batch"))
                        : request?["stream"] is JsonValue sv && sv.TryGetValue<bool>(out var st) && st
                            ? (400, ProviderError.BadRequest("stream: streaming is not supported in batches.", "stream").ToJson(openai ? Dialect.OpenAI : Dialect.Anthropic, "req_sim_batch"))
                            : await ExecuteLineAsync(openai ? b.Endpoint : "/v1/messages", request, ct).ConfigureAwait(false);
                    ok = status == 200;
                    if (ok) Bill(b, openai, answer);
                    json = openai ? OpenAIResultLine(customId, status, answer) : AnthropicResultLine(customId, ok ? "succeeded" : "errored", answer);
                    if (ok) b.Succeeded++; else b.Errored++;
                }
                else if (lineFate == LineFate.Cancel)
                {
                    b.Canceled++;
                    json = openai ? OpenAIErrorLine(customId, "batch_cancelled", "This request was cancelled before it was executed.") : AnthropicResultLine(customId, "canceled", null);
                }
                else
                {
                    b.Expired++;
                    json = openai ? OpenAIErrorLine(customId, "batch_expired", "This request could not be executed before the completion window expired.") : AnthropicResultLine(customId, "expired", null);
                }
                if (openai && !ok)
                {
                    await errorsOut!.WriteLineAsync(json.AsMemory(), ct).ConfigureAwait(false);
                    errCount++;
                }
                else
                {
                    await output.WriteLineAsync(json.AsMemory(), ct).ConfigureAwait(false);
                    outCount++;
                }
            }
        }
        if (!openai)
        {
            b.ResultsPath = outPath;
            return;
        }
        var created = _time.GetUtcNow().ToUnixTimeSeconds();
        if (outCount > 0)
        {
            BatchStore.Save(new SimFile { Id = outId, Filename = "batch_output.jsonl", Purpose = "batch_output", Bytes = new FileInfo(outPath).Length, CreatedAt = created, Path = outPath });
            b.OutputFileId = outId;
        }
        else File.Delete(outPath);
        if (errCount > 0)
        {
            BatchStore.Save(new SimFile { Id = errId, Filename = "batch_errors.jsonl", Purpose = "batch_output", Bytes = new FileInfo(errPath).Length, CreatedAt = created, Path = errPath });
            b.ErrorFileId = errId;
        }
        else File.Delete(errPath);
    }

    /// <summary>One request answered by the synchronous handler, in memory.</summary>
    private async Task<(int Status, byte[] Body)> ExecuteLineAsync(string path, JsonObject? request, CancellationToken ct)
    {
        var x = new LineExchange { Method = "POST", Path = path, Body = Encoding.UTF8.GetBytes(request?.ToJsonString() ?? "null") };
        await HandleAsync(x, ct).ConfigureAwait(false);
        return (x.Status, x.Output.ToArray());
    }

    /// <summary>Adds a succeeded request's usage to the batch and bills it at the batch rate; Anthropic's usage says <c>service_tier: batch</c>.</summary>
    private void Bill(SimBatch b, bool openai, byte[] answer)
    {
        using var doc = JsonDocument.Parse(answer);
        var root = doc.RootElement;
        if (!root.TryGetProperty("usage", out var u)) return;
        var usage = openai ? UsageReader.ReadOpenAI(u) : UsageReader.ReadAnthropic(u);
        b.InputTokens += usage.TotalInputTokens;
        b.CachedTokens += usage.CacheReadTokens;
        b.OutputTokens += usage.OutputTokens;
        b.ReasoningTokens += usage.ReasoningTokens;
        var model = root.TryGetProperty("model", out var m) ? m.GetString() : null;
        if (model is not null && _catalog.Find(model).Price is { } price) b.BilledUsd += CostCalculator.Compute(price, usage, batch: true).Total;
    }

    private static string OpenAIResultLine(string customId, int status, byte[] body)
    {
        var o = new JsonObject
        {
            ["id"] = "batch_req_" + Guid.NewGuid().ToString("N"),
            ["custom_id"] = customId,
            ["response"] = new JsonObject { ["status_code"] = status, ["request_id"] = "req_sim_" + Guid.NewGuid().ToString("N")[..12], ["body"] = JsonNode.Parse(body) },
            ["error"] = null,
        };
        return o.ToJsonString();
    }

    private static string OpenAIErrorLine(string customId, string code, string message) => new JsonObject
    {
        ["id"] = "batch_req_" + Guid.NewGuid().ToString("N"),
        ["custom_id"] = customId,
        ["response"] = null,
        ["error"] = new JsonObject { ["code"] = code, ["message"] = message },
    }.ToJsonString();

    private static string AnthropicResultLine(string customId, string type, byte[]? body)
    {
        var result = new JsonObject { ["type"] = type };
        if (type == "succeeded")
        {
            var message = JsonNode.Parse(body!)!.AsObject();
            if (message["usage"] is JsonObject usage) usage["service_tier"] = "batch";
            result["message"] = message;
        }
        else if (type == "errored")
        {
            var error = JsonNode.Parse(body!)!.AsObject();
            error.Remove("request_id");
            result["error"] = error;
        }
        return new JsonObject { ["custom_id"] = customId, ["result"] = result }.ToJsonString();
    }

    /// <summary>A request of a batch, run through the synchronous handler with the provider's own credentials.</summary>
    private sealed class LineExchange : SimulatorExchange
    {
        public int Status { get; private set; } = 200;
        public MemoryStream Output { get; } = new();

        public override string? Header(string name) => name.ToLowerInvariant() switch
        {
            "authorization" => "Bearer simulator-batch",
            "x-api-key" => "simulator-batch",
            "anthropic-version" => "2023-06-01",
            _ => null,
        };

        public override void SetStatus(int status) => Status = status;

        public override void SetHeader(string name, string value)
        {
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            Output.Write(data.Span);
            return ValueTask.CompletedTask;
        }
    }
}
