using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Attribution;
using Bursar.Core.Batch;
using Bursar.Core.Keys;
using Bursar.Core.Pipeline;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Proxy;
using Bursar.Hosting;
using Bursar.Providers.Dialects;
using Bursar.Providers.Upstream;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Logging;
using Microsoft.Net.Http.Headers;

namespace Bursar.Gateway.Batch;

/// <summary>
/// The providers' batch APIs through the gateway (OpenAI Files + Batches, Anthropic Message Batches): the caller's virtual
/// key and tags at submit, every line checked before anything goes upstream (<see cref="BatchInput"/>), the batch's worst
/// case held against its budgets (<see cref="BatchReservations"/>), Bursar's ids mapped to the deployment holding the
/// batch, and each result line one ledger row at the batch rate (<see cref="BatchCollector"/>, run by the poller and by
/// every read of a batch). A key sees only its own batches and files.
/// </summary>
public sealed partial class BatchGateway(
    KeyAuthenticator auth, IBatchStore store, UpstreamClient upstream, BatchInput input, BatchReservations reservations, BatchCollector collector,
    UpstreamRegistry registry, BursarOptions bursar, TimeProvider time, ILogger<BatchGateway> logger)
{
    private static readonly string[] UploadPurposes = ["batch"];
    private readonly string _spool = Path.Combine(bursar.DataDirectory, "batches");

    private sealed record Caller(VirtualKey Key, CallAttribution Attribution, Func<string, string?> Header);

    /// <summary>Runs one batch request: any failure is the caller's dialect's error, never a 500.</summary>
    private async Task RunAsync(HttpContext ctx, Dialect dialect, Func<Caller, Task> handler)
    {
        try
        {
            var (key, error) = await auth.AuthenticateAsync(ctx.Request, ctx.RequestAborted).ConfigureAwait(false);
            if (error is not null)
            {
                await CallerAnswer.WriteErrorAsync(ctx, dialect, error).ConfigureAwait(false);
                return;
            }
            Func<string, string?> header = name => ctx.Request.Headers.TryGetValue(name, out var v) ? v.ToString() : null;
            var attribution = AttributionResolver.Resolve(key!, header, out var tagError);
            if (tagError is not null)
            {
                await CallerAnswer.WriteErrorAsync(ctx, dialect, tagError.Malformed ? ProviderError.BadRequest(tagError.Message, tagError.Header) : ProviderError.Forbidden(tagError.Message)).ConfigureAwait(false);
                return;
            }
            await handler(new Caller(key!, attribution, header)).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            // the caller went away
        }
        catch (Exception e) when (e is BadHttpRequestException or InvalidDataException)
        {
            if (!ctx.Response.HasStarted) await CallerAnswer.WriteErrorAsync(ctx, dialect, ProviderError.BadRequest($"The request body cannot be read: {e.Message}")).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HttpRequestException or TimeoutException or IOException)
        {
            LogUpstream(logger, ctx.Request.Path, e.Message);
            if (!ctx.Response.HasStarted)
                await CallerAnswer.WriteErrorAsync(ctx, dialect, new ProviderError(502, $"The provider could not be reached for {ctx.Request.Method} {ctx.Request.Path}: {e.Message}", ErrorSource.Upstream)).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            LogUnexpected(logger, ctx.Request.Path, e);
            if (!ctx.Response.HasStarted)
                await CallerAnswer.WriteErrorAsync(ctx, dialect, new ProviderError(502, $"Bursar could not complete {ctx.Request.Method} {ctx.Request.Path} ({e.GetType().Name}).", ErrorSource.Gateway)).ConfigureAwait(false);
        }
    }

    // ---------------------------------------------------------------- OpenAI Files

    public Task UploadFileAsync(HttpContext ctx) => RunAsync(ctx, Dialect.OpenAI, async caller =>
    {
        const Dialect d = Dialect.OpenAI;
        var ct = ctx.RequestAborted;
        var boundary = MediaTypeHeaderValue.TryParse(ctx.Request.ContentType, out var media) && media.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase)
            ? HeaderUtilities.RemoveQuotes(media.Boundary).Value : null;
        if (boundary is not { Length: > 0 and <= 200 })
        {
            await CallerAnswer.WriteErrorAsync(ctx, d, ProviderError.BadRequest("Upload the batch input as multipart/form-data with the fields 'file' (JSONL) and 'purpose' ('batch').", "file")).ConfigureAwait(false);
            return;
        }
        Directory.CreateDirectory(_spool);
        var id = BatchObjects.NewFileId(time.GetUtcNow());
        var spoolPath = Path.Combine(_spool, id + ".jsonl");
        string? purpose = null, filename = null;
        BatchInputSummary? summary = null;
        ProviderError? error = null;
        try
        {
            var reader = new MultipartReader(boundary, ctx.Request.Body);
            while (error is null && await reader.ReadNextSectionAsync(ct).ConfigureAwait(false) is { } section)
            {
                var disposition = section.GetContentDispositionHeader();
                var name = disposition is null ? null : HeaderUtilities.RemoveQuotes(disposition.Name).Value;
                if (name == "purpose")
                {
                    using var text = new StreamReader(section.Body);
                    var buffer = new char[65];
                    purpose = new string(buffer, 0, await text.ReadBlockAsync(buffer, ct).ConfigureAwait(false)).Trim();
                }
                else if (name == "file" && summary is null)
                {
                    filename = HeaderUtilities.RemoveQuotes(disposition!.FileName).Value is { Length: > 0 } fn ? fn[..Math.Min(fn.Length, 255)] : "batch.jsonl";
                    await using var spool = new FileStream(spoolPath, FileMode.Create, FileAccess.Write, FileShare.None, 64 * 1024, useAsync: true);
                    (summary, error) = await input.SpoolOpenAIAsync(section.Body, spool, ct).ConfigureAwait(false);
                }
                else
                {
                    await section.Body.CopyToAsync(Stream.Null, ct).ConfigureAwait(false);
                }
            }
            if (error is null && purpose is not null && !UploadPurposes.Contains(purpose, StringComparer.Ordinal))
                error = ProviderError.BadRequest($"Invalid value for 'purpose': '{purpose}'. Bursar passes batch input files through: upload with purpose 'batch'.", "purpose");
            else if (error is null && purpose is null) error = ProviderError.BadRequest("Missing required parameter: 'purpose' (send 'batch').", "purpose");
            else if (error is null && summary is null) error = ProviderError.BadRequest("Missing required parameter: 'file' (the JSONL batch input).", "file");
        }
        catch (Exception e) when (e is InvalidDataException or BadHttpRequestException || (e is IOException && !ct.IsCancellationRequested))
        {
            error = ProviderError.BadRequest($"The multipart/form-data body cannot be read: {e.Message}", "file");
        }
        if (error is not null)
        {
            TryDelete(spoolPath);
            await CallerAnswer.WriteErrorAsync(ctx, d, error).ConfigureAwait(false);
            return;
        }
        var deployment = summary!.Deployment;
        if (deployment.Dialect == Dialect.Anthropic)
        {
            // lines for Claude: Anthropic has no files API, so Bursar keeps the file and sends its lines as a message batch at submit
            await SaveUploadAsync(ctx, caller, id, deployment, CrossDialectBatches.LocalPrefix + id, filename!, summary, spoolPath, LocalFileObject(id, summary.Bytes, filename!, time.GetUtcNow()), ct).ConfigureAwait(false);
            return;
        }
        HttpContent Upload()
        {
            var form = new MultipartFormDataContent();
            form.Add(new StringContent("batch"), "purpose");
            var file = new StreamContent(new FileStream(spoolPath, FileMode.Open, FileAccess.Read, FileShare.Read, 64 * 1024, useAsync: true), 64 * 1024);
            file.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/jsonl");
            form.Add(file, "file", filename!);
            return form;
        }
        using var resp = await upstream.SendRawAsync(deployment, HttpMethod.Post, "files", Upload, caller.Header, ct).ConfigureAwait(false);
        if (!resp.IsSuccessStatusCode)
        {
            TryDelete(spoolPath);
            await RelayAsync(ctx, resp).ConfigureAwait(false);
            return;
        }
        var o = await ReadObjectAsync(resp, ct).ConfigureAwait(false);
        if (BatchObjects.Str(o, "id") is not { } upstreamId) throw new HttpRequestException($"Deployment '{deployment.Name}' answered the upload without a file id.");
        await SaveUploadAsync(ctx, caller, id, deployment, upstreamId, filename!, summary, spoolPath, o!, ct).ConfigureAwait(false);
    });

    private async Task SaveUploadAsync(HttpContext ctx, Caller caller, string id, UpstreamDeployment deployment, string upstreamId, string filename, BatchInputSummary summary, string spoolPath, JsonObject o, CancellationToken ct)
    {
        var manifest = spoolPath + ".manifest";
        await BatchManifest.WriteAsync(manifest, summary.Lines, ct).ConfigureAwait(false);
        await store.SaveFileAsync(new BatchFileState
        {
            Id = id, Deployment = deployment.Name, UpstreamId = upstreamId, KeyId = caller.Key.Id, Purpose = "batch", Filename = filename, Bytes = summary.Bytes,
            Lines = summary.Lines.Count, Model = summary.Model, WorstUsd = summary.WorstUsd, Spool = spoolPath, CreatedAt = time.GetUtcNow(),
        }, ct).ConfigureAwait(false);
        o["id"] = id;
        await WriteJsonAsync(ctx, 200, o.ToJsonString()).ConfigureAwait(false);
    }

    /// <summary>The file object of a file Bursar holds itself (an input file for Claude, a result file of a cross-dialect batch).</summary>
    private static JsonObject LocalFileObject(string id, long bytes, string filename, DateTimeOffset created, string purpose = "batch") => new()
    {
        ["id"] = id, ["object"] = "file", ["bytes"] = bytes, ["created_at"] = created.ToUnixTimeSeconds(), ["filename"] = filename, ["purpose"] = purpose,
        ["status"] = "processed", ["expires_at"] = null, ["status_details"] = null,
    };

    /// <summary>A file of a cross-dialect batch: an input file Bursar keeps, or a result file made from a message batch's results.</summary>
    private static bool IsLocal(BatchFileState f) => f.UpstreamId.StartsWith(CrossDialectBatches.LocalPrefix, StringComparison.Ordinal);

    private static bool IsTranslatedResults(BatchFileState f, UpstreamDeployment d) =>
        d.Dialect == Dialect.Anthropic && (f.UpstreamId.EndsWith(CrossDialectBatches.OutputSuffix, StringComparison.Ordinal) || f.UpstreamId.EndsWith(CrossDialectBatches.ErrorSuffix, StringComparison.Ordinal));

    private async Task<BatchFileState?> OwnFileAsync(HttpContext ctx, Caller caller, string id)
    {
        var f = await store.FindFileAsync(id, ctx.RequestAborted).ConfigureAwait(false);
        if (f is not null && f.KeyId == caller.Key.Id && !f.Deleted) return f;
        await CallerAnswer.WriteErrorAsync(ctx, Dialect.OpenAI, new ProviderError(404, $"No such File object: {id}") { Param = "id" }).ConfigureAwait(false);
        return null;
    }

    public Task GetFileAsync(HttpContext ctx, string id) => RunAsync(ctx, Dialect.OpenAI, async caller =>
    {
        if (await OwnFileAsync(ctx, caller, id).ConfigureAwait(false) is not { } f || await DeploymentAsync(ctx, f.Deployment).ConfigureAwait(false) is not { } d) return;
        if (IsLocal(f) || IsTranslatedResults(f, d))
        {
            var purpose = IsLocal(f) ? "batch" : "batch_output";
            var name = IsLocal(f) ? f.Filename ?? "batch.jsonl" : f.UpstreamId.EndsWith(CrossDialectBatches.OutputSuffix, StringComparison.Ordinal) ? "batch_output.jsonl" : "batch_errors.jsonl";
            await WriteJsonAsync(ctx, 200, LocalFileObject(f.Id, f.Bytes, name, f.CreatedAt, purpose).ToJsonString()).ConfigureAwait(false);
            return;
        }
        using var resp = await upstream.SendRawAsync(d, HttpMethod.Get, "files/" + Uri.EscapeDataString(f.UpstreamId), null, caller.Header, ctx.RequestAborted).ConfigureAwait(false);
        if (!resp.IsSuccessStatusCode)
        {
            await RelayAsync(ctx, resp).ConfigureAwait(false);
            return;
        }
        var o = await ReadObjectAsync(resp, ctx.RequestAborted).ConfigureAwait(false);
        o!["id"] = f.Id;
        await WriteJsonAsync(ctx, 200, o.ToJsonString()).ConfigureAwait(false);
    });

    public Task FileContentAsync(HttpContext ctx, string id) => RunAsync(ctx, Dialect.OpenAI, async caller =>
    {
        if (await OwnFileAsync(ctx, caller, id).ConfigureAwait(false) is not { } f || await DeploymentAsync(ctx, f.Deployment).ConfigureAwait(false) is not { } d) return;
        // reading results never bills: the rows were written when the results arrived (the poller), whoever reads them, however often
        if (IsLocal(f))
        {
            if (f.Spool is null || !File.Exists(f.Spool))
            {
                await CallerAnswer.WriteErrorAsync(ctx, Dialect.OpenAI, new ProviderError(404, $"The content of file {f.Id} is no longer held.") { Param = "id" }).ConfigureAwait(false);
                return;
            }
            ctx.Response.ContentType = "application/jsonl";
            await ctx.Response.SendFileAsync(f.Spool, ctx.RequestAborted).ConfigureAwait(false);
            return;
        }
        if (IsTranslatedResults(f, d))
        {
            // an OpenAI caller's batch a Claude deployment ran: the message batch's results, translated line by line as they stream
            var errors = f.UpstreamId.EndsWith(CrossDialectBatches.ErrorSuffix, StringComparison.Ordinal);
            var upstreamBatch = f.UpstreamId[..f.UpstreamId.LastIndexOf('#')];
            using var results = await upstream.SendRawAsync(d, HttpMethod.Get, BatchCollector.BatchPath(d, $"/{Uri.EscapeDataString(upstreamBatch)}/results"), null, caller.Header, ctx.RequestAborted).ConfigureAwait(false);
            if (!results.IsSuccessStatusCode)
            {
                await RelayAsync(ctx, results, Dialect.OpenAI).ConfigureAwait(false);
                return;
            }
            ctx.Response.ContentType = "application/jsonl";
            var created = time.GetUtcNow().ToUnixTimeSeconds();
            await using var source = await results.Content.ReadAsStreamAsync(ctx.RequestAborted).ConfigureAwait(false);
            await CrossDialectBatches.TranslateLinesAsync(source, ctx.Response.Body, line => CrossDialectBatches.ToOpenAILine(line, errors, created), ctx.RequestAborted).ConfigureAwait(false);
            return;
        }
        using var resp = await upstream.SendRawAsync(d, HttpMethod.Get, $"files/{Uri.EscapeDataString(f.UpstreamId)}/content", null, caller.Header, ctx.RequestAborted).ConfigureAwait(false);
        await RelayAsync(ctx, resp).ConfigureAwait(false);
    });

    public Task DeleteFileAsync(HttpContext ctx, string id) => RunAsync(ctx, Dialect.OpenAI, async caller =>
    {
        if (await OwnFileAsync(ctx, caller, id).ConfigureAwait(false) is not { } f || await DeploymentAsync(ctx, f.Deployment).ConfigureAwait(false) is not { } d) return;
        if (!IsLocal(f) && !IsTranslatedResults(f, d))
        {
            using var resp = await upstream.SendRawAsync(d, HttpMethod.Delete, "files/" + Uri.EscapeDataString(f.UpstreamId), null, caller.Header, ctx.RequestAborted).ConfigureAwait(false);
            if (!resp.IsSuccessStatusCode)
            {
                await RelayAsync(ctx, resp).ConfigureAwait(false);
                return;
            }
        }
        if (f.Spool is not null) TryDelete(f.Spool); // the manifest stays: a batch of this file still needs it for its results
        await store.SaveFileAsync(f with { Deleted = true, Spool = null }, ctx.RequestAborted).ConfigureAwait(false);
        await WriteJsonAsync(ctx, 200, new JsonObject { ["id"] = f.Id, ["object"] = "file", ["deleted"] = true }.ToJsonString()).ConfigureAwait(false);
    });

    // ---------------------------------------------------------------- submit

    public Task CreateOpenAIBatchAsync(HttpContext ctx) => RunAsync(ctx, Dialect.OpenAI, async caller =>
    {
        const Dialect d = Dialect.OpenAI;
        var ct = ctx.RequestAborted;
        var (buffer, length, bodyError) = await RequestBody.ReadAsync(ctx.Request, Math.Min(bursar.MaxRequestBodyBytes, 1024 * 1024), logger, ct).ConfigureAwait(false);
        JsonObject? body;
        try
        {
            body = bodyError is null ? JsonNode.Parse(buffer.AsSpan(0, length)) as JsonObject : null;
        }
        catch (JsonException e)
        {
            bodyError = ProviderError.BadRequest($"The request body is not valid JSON: {e.Message}");
            body = null;
        }
        finally
        {
            RequestBody.Return(buffer);
        }
        ProviderError? Check()
        {
            if (body is null) return ProviderError.BadRequest("The request body must be a JSON object: {\"input_file_id\", \"endpoint\", \"completion_window\"}.");
            if (BatchObjects.Str(body, "input_file_id") is null) return ProviderError.BadRequest("Missing required parameter: 'input_file_id'.", "input_file_id");
            if (BatchObjects.Str(body, "endpoint") != BatchInput.ChatEndpoint)
                return ProviderError.BadRequest($"Invalid value for 'endpoint': Bursar passes batches of '{BatchInput.ChatEndpoint}' through.", "endpoint");
            if (BatchObjects.Str(body, "completion_window") != "24h") return ProviderError.BadRequest("Invalid value for 'completion_window': the only supported value is '24h'.", "completion_window");
            if (body["metadata"] is { } md && (md is not JsonObject mo || mo.Count > 15 || mo.ContainsKey(BatchObjects.MetadataKey)))
                return ProviderError.BadRequest($"Invalid 'metadata': expected an object of at most 15 pairs (Bursar adds '{BatchObjects.MetadataKey}', the 16th the provider allows).", "metadata");
            return null;
        }
        if ((bodyError ?? Check()) is { } invalid)
        {
            await CallerAnswer.WriteErrorAsync(ctx, d, invalid).ConfigureAwait(false);
            return;
        }
        var fileId = BatchObjects.Str(body, "input_file_id")!;
        var f = await store.FindFileAsync(fileId, ct).ConfigureAwait(false);
        if (f is null || f.KeyId != caller.Key.Id || f.Deleted || f.Purpose != "batch" || f.Spool is null)
        {
            await CallerAnswer.WriteErrorAsync(ctx, d, new ProviderError(404, $"No such File object: {fileId} (upload the batch input through Bursar with purpose 'batch').") { Param = "input_file_id" }).ConfigureAwait(false);
            return;
        }
        if (await DeploymentAsync(ctx, f.Deployment).ConfigureAwait(false) is not { } deployment) return;
        var lines = await ReadManifestAsync(f.Spool + ".manifest", ct).ConfigureAwait(false);
        var state = NewState(caller, d, deployment, f.Model, lines, f.Spool + ".manifest") with { InputFileId = f.Id };
        if (deployment.Dialect == Dialect.Anthropic)
        {
            // a file of Claude lines: one Anthropic message batch of the translated requests, its object and results shown as OpenAI's
            state = state with { Object = CrossDialectBatches.SubmittingOpenAIBatch(state, body!["metadata"]).ToJsonString() };
            var spool = f.Spool;
            var requests = Path.Combine(_spool, state.Id + ".requests.json");
            await SubmitAsync(ctx, caller, state, lines, deployment, "v1/messages/batches", async token =>
            {
                await using (var file = new FileStream(requests, FileMode.Create, FileAccess.Write, FileShare.None, 64 * 1024, useAsync: true))
                    await CrossDialectBatches.WriteAnthropicRequestsAsync(spool, file, token).ConfigureAwait(false);
                return (null, () => JsonFile(requests));
            }).ConfigureAwait(false);
            TryDelete(requests);
            return;
        }
        var metadata = body!["metadata"] is JsonObject m ? (JsonObject)m.DeepClone() : new JsonObject();
        metadata[BatchObjects.MetadataKey] = state.Id;
        var upstreamBody = new JsonObject
        {
            ["input_file_id"] = f.UpstreamId, ["endpoint"] = BatchInput.ChatEndpoint, ["completion_window"] = "24h", ["metadata"] = metadata,
        };
        if (body["output_expires_after"] is { } oea) upstreamBody["output_expires_after"] = oea.DeepClone();
        var bytes = System.Text.Encoding.UTF8.GetBytes(upstreamBody.ToJsonString());
        await SubmitAsync(ctx, caller, state, lines, deployment, "batches", _ => Task.FromResult<(HttpResponseMessage?, Func<HttpContent>?)>((null, () => Json(bytes)))).ConfigureAwait(false);
    });

    public Task CreateAnthropicBatchAsync(HttpContext ctx) => RunAsync(ctx, Dialect.Anthropic, async caller =>
    {
        const Dialect d = Dialect.Anthropic;
        var ct = ctx.RequestAborted;
        var (buffer, length, bodyError) = await RequestBody.ReadAsync(ctx.Request, bursar.MaxRequestBodyBytes, logger, ct).ConfigureAwait(false);
        try
        {
            var (summary, error) = bodyError is null ? input.CheckAnthropic(buffer.AsSpan(0, length)) : (null, bodyError);
            if (error is not null)
            {
                await CallerAnswer.WriteErrorAsync(ctx, d, error).ConfigureAwait(false);
                return;
            }
            Directory.CreateDirectory(_spool);
            var state = NewState(caller, d, summary!.Deployment, null, summary.Lines, "");
            state = state with { Manifest = Path.Combine(_spool, state.Id + ".manifest") };
            await BatchManifest.WriteAsync(state.Manifest, summary.Lines, ct).ConfigureAwait(false);
            var body = buffer.AsMemory(0, length);
            if (summary.Deployment.Dialect == Dialect.OpenAI)
            {
                // requests for GPT models: one OpenAI input file of the translated requests and one batch of it, shown as a message batch
                var dep = summary.Deployment;
                var input = Path.Combine(_spool, state.Id + ".jsonl");
                state = state with { Model = summary.Lines[0].Model };
                var id = state.Id;
                await SubmitAsync(ctx, caller, state, summary.Lines, dep, "batches", async token =>
                {
                    await using (var file = new FileStream(input, FileMode.Create, FileAccess.Write, FileShare.None, 64 * 1024, useAsync: true))
                        await CrossDialectBatches.WriteOpenAIInputAsync(body, file, token).ConfigureAwait(false);
                    HttpContent Upload()
                    {
                        var form = new MultipartFormDataContent();
                        form.Add(new StringContent("batch"), "purpose");
                        form.Add(new StreamContent(new FileStream(input, FileMode.Open, FileAccess.Read, FileShare.Read, 64 * 1024, useAsync: true), 64 * 1024), "file", id + ".jsonl");
                        return form;
                    }
                    var uploaded = await upstream.SendRawAsync(dep, HttpMethod.Post, "files", Upload, caller.Header, token).ConfigureAwait(false);
                    if (!uploaded.IsSuccessStatusCode) return (uploaded, null);
                    string fileId;
                    using (uploaded)
                        fileId = BatchObjects.Str(await ReadObjectAsync(uploaded, token).ConfigureAwait(false), "id") ?? throw new HttpRequestException($"Deployment '{dep.Name}' answered the upload without a file id.");
                    var create = System.Text.Encoding.UTF8.GetBytes(new JsonObject
                    {
                        ["input_file_id"] = fileId, ["endpoint"] = BatchInput.ChatEndpoint, ["completion_window"] = "24h",
                        ["metadata"] = new JsonObject { [BatchObjects.MetadataKey] = id },
                    }.ToJsonString());
                    return (null, () => Json(create));
                }).ConfigureAwait(false);
                TryDelete(input);
                return;
            }
            // the caller's bytes go upstream untouched: every request passed the same checks a synchronous call gets
            await SubmitAsync(ctx, caller, state, summary.Lines, summary.Deployment, "v1/messages/batches", _ => Task.FromResult<(HttpResponseMessage?, Func<HttpContent>?)>((null, () => Json(body)))).ConfigureAwait(false);
        }
        finally
        {
            RequestBody.Return(buffer);
        }
    });

    private BatchState NewState(Caller caller, Dialect d, UpstreamDeployment deployment, string? model, IReadOnlyList<ManifestLine> lines, string manifest)
    {
        var now = time.GetUtcNow();
        var a = caller.Attribution;
        return new BatchState
        {
            Id = BatchObjects.NewBatchId(d.Name(), now), Dialect = d.Name(), Deployment = deployment.Name, Phase = BatchPhase.Submitting,
            KeyId = caller.Key.Id, Team = a.Team, Customer = a.Customer, Feature = a.Feature, Task = a.Task, Template = a.Template,
            Model = model, Lines = lines.Count, WorstUsd = lines.Sum(l => l.WorstUsd), Manifest = manifest, CreatedAt = now, UpdatedAt = now,
        };
    }

    /// <summary>
    /// What a submit sends: the create request's body (made once the budgets hold the batch, e.g. a cross-dialect batch's translated
    /// requests and their upload), or the provider's refusal of a step before it.
    /// </summary>
    private delegate Task<(HttpResponseMessage? Refused, Func<HttpContent>? Body)> SubmitBody(CancellationToken ct);

    private static ReadOnlyMemoryContent Json(ReadOnlyMemory<byte> bytes) =>
        new(bytes) { Headers = { ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json") } };

    private static StreamContent JsonFile(string path) =>
        new(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 64 * 1024, useAsync: true), 64 * 1024) { Headers = { ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json") } };

    /// <summary>Holds the budgets, records the submit before the provider hears of it, sends it, and answers with Bursar's ids.</summary>
    private async Task SubmitAsync(HttpContext ctx, Caller caller, BatchState state, IReadOnlyList<ManifestLine> lines, UpstreamDeployment deployment, string path, SubmitBody body)
    {
        var ct = ctx.RequestAborted;
        var dialect = state.Dialect == "anthropic" ? Dialect.Anthropic : Dialect.OpenAI;
        if (await reservations.TryReserveAsync(state, lines, ct).ConfigureAwait(false) is { } br)
        {
            if (br.Unavailable is { } down)
            {
                await CallerAnswer.WriteErrorAsync(ctx, dialect, ProviderError.From(new LeverRefusal(503, down, Blame.Gateway) { Type = "budget_store_unavailable", Code = "budget_store_unavailable", RetryAfterSeconds = 5 })).ConfigureAwait(false);
                return;
            }
            var secs = br.ResetsAt == DateTimeOffset.MaxValue ? (int?)null : (int)Math.Max(1, Math.Ceiling((br.ResetsAt - time.GetUtcNow()).TotalSeconds));
            var message = $"This batch of {lines.Count} requests could cost up to ${state.WorstUsd.ToString(CultureInfo.InvariantCulture)} at the batch rate, so it is refused whole. {br.Message} (budget id '{br.Budget.Id}')";
            await CallerAnswer.WriteErrorAsync(ctx, dialect, ProviderError.From(new LeverRefusal(429, message, Blame.Policy) { Type = "budget_exceeded", Code = "budget_exceeded", RetryAfterSeconds = secs })).ConfigureAwait(false);
            return;
        }
        using var submitting = await collector.LockAsync(state.Id, ct).ConfigureAwait(false);
        await store.SaveBatchAsync(state, ct).ConfigureAwait(false);
        // from here a failure leaves it unsure whether the provider holds the batch: the poller reconciles it (OpenAI: by the metadata
        // Bursar attached) or abandons it, releasing the budget then
        var (refused, content) = await body(CancellationToken.None).ConfigureAwait(false);
        var resp = refused ?? await upstream.SendRawAsync(deployment, HttpMethod.Post, path, content!, caller.Header, CancellationToken.None).ConfigureAwait(false);
        using (resp)
        {
            if (!resp.IsSuccessStatusCode)
            {
                reservations.Release(state.Id);
                await store.SaveBatchAsync(state with { Phase = BatchPhase.Abandoned, Collected = true, Error = $"the provider refused the batch ({(int)resp.StatusCode})", UpdatedAt = time.GetUtcNow() }, CancellationToken.None).ConfigureAwait(false);
                await (deployment.Dialect == dialect ? RelayAsync(ctx, resp) : RelayAsync(ctx, resp, dialect)).ConfigureAwait(false);
                return;
            }
            var o = await ReadObjectAsync(resp, CancellationToken.None).ConfigureAwait(false);
            if (BatchObjects.Str(o, "id") is not { } upstreamId) throw new HttpRequestException($"Deployment '{deployment.Name}' accepted the batch without an id.");
            state = state with { UpstreamId = upstreamId, Phase = BatchPhase.Running };
            state = await collector.SaveObjectAsync(state, o!, CancellationToken.None).ConfigureAwait(false);
            LogSubmitted(logger, state.Id, deployment.Name, upstreamId, lines.Count, state.WorstUsd);
        }
        submitting.Dispose();
        await WriteJsonAsync(ctx, 200, BatchObjects.ForCaller(state.Object!, Origin(ctx))).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- read, list, cancel, results, delete

    private async Task<BatchState?> OwnBatchAsync(HttpContext ctx, Caller caller, Dialect d, string id)
    {
        var b = await store.FindBatchAsync(id, ctx.RequestAborted).ConfigureAwait(false);
        if (b is not null && b.KeyId == caller.Key.Id && b.Dialect == d.Name() && b.Phase != BatchPhase.Abandoned) return b;
        await CallerAnswer.WriteErrorAsync(ctx, d, new ProviderError(404, d == Dialect.OpenAI ? $"No batch found with id '{id}'." : $"No message batch found with id '{id}'.") { Param = d == Dialect.OpenAI ? "batch_id" : null }).ConfigureAwait(false);
        return null;
    }

    public Task GetBatchAsync(HttpContext ctx, Dialect d, string id) => RunAsync(ctx, d, async caller =>
    {
        if (await OwnBatchAsync(ctx, caller, d, id).ConfigureAwait(false) is not { } b) return;
        b = await collector.RefreshAsync(b, ctx.RequestAborted).ConfigureAwait(false); // an ended batch has its rows before the caller hears it ended
        await AnswerBatchAsync(ctx, d, b).ConfigureAwait(false);
    });

    private static Task AnswerBatchAsync(HttpContext ctx, Dialect d, BatchState b) => b.Object is { } o
        ? WriteJsonAsync(ctx, 200, BatchObjects.ForCaller(o, Origin(ctx)))
        : CallerAnswer.WriteErrorAsync(ctx, d, new ProviderError(409, $"Batch {b.Id} is still being submitted; ask again in a moment.") { RetryAfterSeconds = 1 });

    public Task ListBatchesAsync(HttpContext ctx, Dialect d) => RunAsync(ctx, d, async caller =>
    {
        var q = ctx.Request.Query;
        var max = d == Dialect.OpenAI ? 100 : 1000;
        var limit = 20;
        if (q.TryGetValue("limit", out var lv) && (!int.TryParse(lv.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit < 1 || limit > max))
        {
            await CallerAnswer.WriteErrorAsync(ctx, d, ProviderError.BadRequest($"Invalid 'limit': expected an integer from 1 to {max}.", "limit")).ConfigureAwait(false);
            return;
        }
        var all = (await store.ListBatchesAsync(caller.Key.Id, d.Name(), 100_000, ctx.RequestAborted).ConfigureAwait(false))
            .Where(b => b.Object is not null && b.Phase != BatchPhase.Abandoned).ToList();
        var after = q[d == Dialect.OpenAI ? "after" : "after_id"].ToString();
        var start = after.Length > 0 && all.FindIndex(b => b.Id == after) is var i and >= 0 ? i + 1 : 0;
        var page = all.Skip(start).Take(limit).ToList();
        var origin = Origin(ctx);
        var o = new JsonObject();
        if (d == Dialect.OpenAI) o["object"] = "list";
        o["data"] = new JsonArray(page.Select(b => JsonNode.Parse(BatchObjects.ForCaller(b.Object!, origin))).ToArray());
        o["first_id"] = page.Count > 0 ? page[0].Id : null;
        o["last_id"] = page.Count > 0 ? page[^1].Id : null;
        o["has_more"] = start + page.Count < all.Count;
        await WriteJsonAsync(ctx, 200, o.ToJsonString()).ConfigureAwait(false);
    });

    public Task CancelBatchAsync(HttpContext ctx, Dialect d, string id) => RunAsync(ctx, d, async caller =>
    {
        if (await OwnBatchAsync(ctx, caller, d, id).ConfigureAwait(false) is not { } b || await DeploymentAsync(ctx, b.Deployment).ConfigureAwait(false) is not { } dep) return;
        if (b.UpstreamId is null)
        {
            await AnswerBatchAsync(ctx, d, b).ConfigureAwait(false);
            return;
        }
        using var resp = await upstream.SendRawAsync(dep, HttpMethod.Post, BatchCollector.BatchPath(dep, $"/{Uri.EscapeDataString(b.UpstreamId)}/cancel"), null, caller.Header, ctx.RequestAborted).ConfigureAwait(false);
        if (!resp.IsSuccessStatusCode)
        {
            await RelayAsync(ctx, resp).ConfigureAwait(false);
            return;
        }
        b = await collector.SaveObjectAsync(b, (await ReadObjectAsync(resp, ctx.RequestAborted).ConfigureAwait(false))!, ctx.RequestAborted).ConfigureAwait(false);
        await AnswerBatchAsync(ctx, d, b).ConfigureAwait(false);
    });

    public Task ResultsAsync(HttpContext ctx, string id) => RunAsync(ctx, Dialect.Anthropic, async caller =>
    {
        if (await OwnBatchAsync(ctx, caller, Dialect.Anthropic, id).ConfigureAwait(false) is not { } b || await DeploymentAsync(ctx, b.Deployment).ConfigureAwait(false) is not { } dep) return;
        b = await collector.RefreshAsync(b, ctx.RequestAborted).ConfigureAwait(false);
        if (b.UpstreamId is null)
        {
            await AnswerBatchAsync(ctx, Dialect.Anthropic, b).ConfigureAwait(false);
            return;
        }
        // reading results never bills: the rows are written once per line, when the batch ends, whoever reads them
        if (dep.Dialect == Dialect.OpenAI)
        {
            // a message batch a GPT deployment ran: its output and error files, translated line by line as they stream
            using var batch = await upstream.SendRawAsync(dep, HttpMethod.Get, BatchCollector.BatchPath(dep, "/" + Uri.EscapeDataString(b.UpstreamId)), null, caller.Header, ctx.RequestAborted).ConfigureAwait(false);
            if (!batch.IsSuccessStatusCode)
            {
                await RelayAsync(ctx, batch, Dialect.Anthropic).ConfigureAwait(false);
                return;
            }
            var o = await ReadObjectAsync(batch, ctx.RequestAborted).ConfigureAwait(false);
            if (!BatchObjects.IsEnded(Dialect.OpenAI, o!))
            {
                await CallerAnswer.WriteErrorAsync(ctx, Dialect.Anthropic, ProviderError.BadRequest($"Message batch {b.Id} has not ended yet; its results are available once processing_status is 'ended'.")).ConfigureAwait(false);
                return;
            }
            ctx.Response.StatusCode = 200;
            ctx.Response.ContentType = "application/binary";
            foreach (var field in new[] { "output_file_id", "error_file_id" })
            {
                if (BatchObjects.Str(o, field) is not { } file) continue;
                using var content = await upstream.SendRawAsync(dep, HttpMethod.Get, $"files/{Uri.EscapeDataString(file)}/content", null, caller.Header, ctx.RequestAborted).ConfigureAwait(false);
                if (!content.IsSuccessStatusCode) throw new HttpRequestException($"Deployment '{dep.Name}' answered {(int)content.StatusCode} for the results file {file}.");
                await using var source = await content.Content.ReadAsStreamAsync(ctx.RequestAborted).ConfigureAwait(false);
                await CrossDialectBatches.TranslateLinesAsync(source, ctx.Response.Body, CrossDialectBatches.ToAnthropicLine, ctx.RequestAborted).ConfigureAwait(false);
            }
            return;
        }
        using var resp = await upstream.SendRawAsync(dep, HttpMethod.Get, BatchCollector.BatchPath(dep, $"/{Uri.EscapeDataString(b.UpstreamId)}/results"), null, caller.Header, ctx.RequestAborted).ConfigureAwait(false);
        await RelayAsync(ctx, resp).ConfigureAwait(false);
    });

    public Task DeleteAnthropicBatchAsync(HttpContext ctx, string id) => RunAsync(ctx, Dialect.Anthropic, async caller =>
    {
        if (await OwnBatchAsync(ctx, caller, Dialect.Anthropic, id).ConfigureAwait(false) is not { } b || await DeploymentAsync(ctx, b.Deployment).ConfigureAwait(false) is not { } dep) return;
        if (b.UpstreamId is null)
        {
            await AnswerBatchAsync(ctx, Dialect.Anthropic, b).ConfigureAwait(false);
            return;
        }
        using var resp = await upstream.SendRawAsync(dep, HttpMethod.Delete, BatchCollector.BatchPath(dep, "/" + Uri.EscapeDataString(b.UpstreamId)), null, caller.Header, ctx.RequestAborted).ConfigureAwait(false);
        if (!resp.IsSuccessStatusCode)
        {
            await RelayAsync(ctx, resp).ConfigureAwait(false);
            return;
        }
        await WriteJsonAsync(ctx, 200, new JsonObject { ["id"] = b.Id, ["type"] = "message_batch_deleted" }.ToJsonString()).ConfigureAwait(false);
    });

    // ---------------------------------------------------------------- helpers

    /// <summary>The deployment holding a batch or file, or null after answering 503 (it is no longer configured).</summary>
    private async Task<UpstreamDeployment?> DeploymentAsync(HttpContext ctx, string name)
    {
        var d = registry.Deployments.FirstOrDefault(x => x.Name.Equals(name, StringComparison.OrdinalIgnoreCase));
        if (d is null)
        {
            var dialect = ctx.Request.Path.StartsWithSegments("/v1/messages") ? Dialect.Anthropic : Dialect.OpenAI;
            await CallerAnswer.WriteErrorAsync(ctx, dialect, new ProviderError(503, $"The deployment '{name}' holding this batch is no longer configured.", ErrorSource.Gateway)).ConfigureAwait(false);
        }
        return d;
    }

    private static async Task<IReadOnlyList<ManifestLine>> ReadManifestAsync(string path, CancellationToken ct)
    {
        var list = new List<ManifestLine>();
        await foreach (var l in BatchManifest.ReadAsync(path, ct).ConfigureAwait(false)) list.Add(l);
        return list;
    }

    private static string Origin(HttpContext ctx) => $"{ctx.Request.Scheme}://{ctx.Request.Host}";

    private static async Task<JsonObject?> ReadObjectAsync(HttpResponseMessage resp, CancellationToken ct)
    {
        try
        {
            return JsonNode.Parse(await resp.Content.ReadAsStringAsync(ct).ConfigureAwait(false)) as JsonObject;
        }
        catch (JsonException e)
        {
            throw new HttpRequestException($"The provider's answer is not JSON: {e.Message}");
        }
    }

    /// <summary>Relays a provider's error answer in the caller's dialect (a cross-dialect batch's deployment speaks the other).</summary>
    private static async Task RelayAsync(HttpContext ctx, HttpResponseMessage resp, Dialect caller)
    {
        var bytes = await resp.Content.ReadAsByteArrayAsync(ctx.RequestAborted).ConfigureAwait(false);
        var error = ProviderError.TryParse((int)resp.StatusCode, bytes) ?? new ProviderError((int)resp.StatusCode, $"The provider answered {(int)resp.StatusCode}.", ErrorSource.Upstream);
        if (resp.Headers.RetryAfter?.Delta is { } delta) error = error with { RetryAfterSeconds = (int)Math.Ceiling(delta.TotalSeconds) };
        await CallerAnswer.WriteErrorAsync(ctx, caller, error.ForDialect(caller)).ConfigureAwait(false);
    }

    private static async Task RelayAsync(HttpContext ctx, HttpResponseMessage resp)
    {
        ctx.Response.StatusCode = (int)resp.StatusCode;
        ctx.Response.ContentType = resp.Content.Headers.ContentType?.ToString() ?? "application/json";
        if (resp.Headers.RetryAfter is { } ra) ctx.Response.Headers.RetryAfter = ra.ToString();
        await using var s = await resp.Content.ReadAsStreamAsync(ctx.RequestAborted).ConfigureAwait(false);
        await s.CopyToAsync(ctx.Response.Body, 64 * 1024, ctx.RequestAborted).ConfigureAwait(false);
    }

    private static async Task WriteJsonAsync(HttpContext ctx, int status, string json)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(json, ctx.RequestAborted).ConfigureAwait(false);
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Batch {BatchId} submitted to {Deployment} as {UpstreamId}: {Lines} lines, worst case ${WorstUsd} at the batch rate")]
    private static partial void LogSubmitted(ILogger logger, string batchId, string deployment, string upstreamId, int lines, decimal worstUsd);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Batch request {Path}: the provider could not be reached ({Reason})")]
    private static partial void LogUpstream(ILogger logger, string path, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Batch request {Path} failed inside the gateway")]
    private static partial void LogUnexpected(ILogger logger, string path, Exception exception);
}
