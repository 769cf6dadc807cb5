using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;
using Bursar.Gateway.Batch;
using Bursar.Gateway.Hosting;
using Bursar.Providers.Simulator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Tests;

/// <summary>A gateway over a data directory of its own (restartable on the same one), polling batches every 50 ms.</summary>
internal sealed class BatchHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private BatchHost(WebApplication app, string baseUrl)
    {
        _app = app;
        Http = new HttpClient { BaseAddress = new Uri(baseUrl) };
    }

    public HttpClient Http { get; }
    public IServiceProvider Services => _app.Services;
    public Bursar.Core.Storage.IBursarStore Store => Services.GetRequiredService<Bursar.Core.Storage.IBursarStore>();
    public ProviderSimulator Simulator => Services.GetRequiredService<ProviderSimulator>();
    public IBatchStore Batches => Services.GetRequiredService<IBatchStore>();

    public static async Task<BatchHost> StartAsync(string dir, params string[] extra)
    {
        var app = GatewayHost.Build(
            ["--urls=http://127.0.0.1:0", $"--Bursar:DataDirectory={dir}", "--Bursar:MaxRequestBodyBytes=1048576", "--Bursar:Providers:BaseRetryDelay=00:00:00.010",
             "--Bursar:AdminKey=admin-test-key", "--Bursar:Batch:PollInterval=00:00:00.050", "--Bursar:Batch:MaxLineBytes=65536", "--Bursar:Batch:ReconcileAfter=00:00:00",
             $"--Bursar:Simulator:BatchDirectory={Path.Combine(dir, "simulator")}", .. extra],
            b => b.Logging.SetMinimumLevel(LogLevel.Warning));
        await app.StartAsync();
        var url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new BatchHost(app, url);
    }

    public async Task<string> KeyAsync(string? customer = null)
    {
        var (key, secret) = KeyFactory.Create(TimeProvider.System, team: "batch-team", customer: customer);
        await Store.AddAsync(key, default);
        return secret;
    }

    public async Task<IReadOnlyList<LedgerRecord>> RowsAsync(Func<LedgerRecord, bool> which, int count, int waitMs = 10_000)
    {
        IReadOnlyList<LedgerRecord> rows = [];
        for (var waited = 0; waited < waitMs; waited += 25)
        {
            rows = (await Store.ReadAsync(new LedgerQuery { Limit = 1_000_000 }, default)).Where(which).ToArray();
            if (rows.Count >= count) return rows;
            await Task.Delay(25);
        }
        return rows;
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
    }
}

/// <summary>The batch APIs through the gateway: metered per line at the batch rate, exactly once, whoever reads the results.</summary>
[Collection("batch")]
public sealed class BatchGatewayTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-batch-" + Guid.NewGuid().ToString("N"));
    private BatchHost _gw = null!;
    private string _key = "";

    public async Task InitializeAsync()
    {
        _gw = await BatchHost.StartAsync(_dir);
        _key = await _gw.KeyAsync();
    }

    public async Task DisposeAsync()
    {
        await _gw.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    internal static string ChatLine(string id, string text, string model = "gpt-4o-mini", int maxTokens = 200) =>
        new JsonObject
        {
            ["custom_id"] = id, ["method"] = "POST", ["url"] = "/v1/chat/completions",
            ["body"] = new JsonObject { ["model"] = model, ["max_completion_tokens"] = maxTokens, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) },
        }.ToJsonString();

    internal static MultipartFormDataContent Upload(string jsonl, string purpose = "batch")
    {
        var form = new MultipartFormDataContent();
        form.Add(new ByteArrayContent(Encoding.UTF8.GetBytes(jsonl)), "file", "in.jsonl");
        form.Add(new StringContent(purpose), "purpose");
        return form;
    }

    internal static async Task<(HttpStatusCode Status, JsonNode? Body)> Send(HttpClient http, HttpMethod method, string path, string key, HttpContent? content = null, bool anthropic = false, string? feature = null)
    {
        using var req = new HttpRequestMessage(method, path) { Content = content };
        if (anthropic) { req.Headers.Add("x-api-key", key); req.Headers.Add("anthropic-version", "2023-06-01"); }
        else req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        if (feature is not null) req.Headers.Add("x-bursar-feature", feature);
        using var resp = await http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        JsonNode? node;
        try { node = text.Length == 0 ? null : JsonNode.Parse(text); } catch (System.Text.Json.JsonException) { node = JsonValue.Create(text); }
        return (resp.StatusCode, node);
    }

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    private async Task<string> SubmitOpenAI(string feature, params string[] lines)
    {
        var (status, file) = await Send(_gw.Http, HttpMethod.Post, "/v1/files", _key, Upload(string.Join("\n", lines) + "\n"), feature: feature);
        Assert.True(status == HttpStatusCode.OK, file?.ToJsonString());
        var (s2, batch) = await Send(_gw.Http, HttpMethod.Post, "/v1/batches", _key, Json($$"""{"input_file_id":"{{file!["id"]}}","endpoint":"/v1/chat/completions","completion_window":"24h"}"""), feature: feature);
        Assert.True(s2 == HttpStatusCode.OK, batch?.ToJsonString());
        Assert.Equal(file["id"]!.GetValue<string>(), batch!["input_file_id"]!.GetValue<string>());
        return batch["id"]!.GetValue<string>();
    }

    [Fact]
    public async Task OpenAI_batch_writes_one_row_per_line_at_the_batch_rate_with_the_saving_credited()
    {
        var id = await SubmitOpenAI("batch-openai", ChatLine("ok-1", "hello [[sim:tokens=300]]", maxTokens: 400), ChatLine("bad-2", "x [[sim:batch=error]]"), ChatLine("late-3", "y [[sim:batch=expire]]"));
        Assert.StartsWith("batch_bsr", id);
        var rows = await _gw.RowsAsync(r => r.BatchId == id, 3);
        Assert.Equal(3, rows.Count);
        Assert.All(rows, r =>
        {
            Assert.True(r.Batch);
            Assert.Equal("batch-openai", r.Feature);
            Assert.Equal("batch-team", r.Team);
            Assert.Equal(BatchLedger.RecordId(id, r.CustomId!), r.Id);
        });
        var ok = rows.Single(r => r.CustomId == "ok-1");
        var price = _gw.Services.GetRequiredService<PriceCatalog>().Find("gpt-4o-mini").Price!;
        Assert.Equal("ok", ok.Outcome);
        Assert.InRange(ok.OutputTokens, 300, 301);
        Assert.Equal((ok.InputTokens * 0.075m + ok.OutputTokens * 0.30m) / 1_000_000m, ok.Cost);
        Assert.Equal(CostCalculator.Compute(price, ok.Usage).Total - ok.Cost!.Value, ok.SavingBatch);
        Assert.Equal(ok.Cost * 2, ok.CounterfactualCost);
        var bad = rows.Single(r => r.CustomId == "bad-2");
        Assert.Equal(("client_error", 0m, 400), (bad.Outcome, bad.Cost!.Value, bad.StatusCode));
        var late = rows.Single(r => r.CustomId == "late-3");
        Assert.Equal(("expired", 0m, "batch_expired"), (late.Outcome, late.Cost!.Value, late.ErrorType));
        // the ledger and the provider's bill agree
        var state = (await _gw.Batches.FindBatchAsync(id, default))!;
        Assert.Equal(_gw.Simulator.BatchBilledUsd(state.UpstreamId!), rows.Sum(r => r.Cost));

        // the caller sees Bursar's ids, and the results through Bursar's file id
        var (_, batch) = await Send(_gw.Http, HttpMethod.Get, "/v1/batches/" + id, _key);
        Assert.Equal("completed", batch!["status"]!.GetValue<string>());
        Assert.Null(batch["metadata"]);
        var outId = batch["output_file_id"]!.GetValue<string>();
        Assert.StartsWith("file-bsr", outId);
        using var req = new HttpRequestMessage(HttpMethod.Get, $"/v1/files/{outId}/content");
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _key);
        var content = await (await _gw.Http.SendAsync(req)).Content.ReadAsStringAsync();
        Assert.Equal("ok-1", JsonNode.Parse(content.Trim())!["custom_id"]!.GetValue<string>());
    }

    [Fact]
    public void The_hand_vector_gpt_4o_mini_batch_line()
    {
        // 1,000 input and 1,500 output tokens of gpt-4o-mini at its batch rates ($0.075 / $0.30 per million):
        // 1,000 x 0.075 / 1e6 = $0.000075 and 1,500 x 0.30 / 1e6 = $0.00045, so the line costs $0.000525; at the standard rates
        // ($0.15 / $0.60) the same tokens cost $0.00105, the counterfactual, and the batch saving is the difference.
        var catalog = new PriceCatalog(PriceFiles.LoadBuiltIn());
        var batch = new BatchState { Id = "batch_bsrhand", Dialect = "openai", Deployment = "openai", Phase = BatchPhase.Running, KeyId = "k", Lines = 1, WorstUsd = 0, Manifest = "", CreatedAt = DateTimeOffset.UnixEpoch };
        var line = new BatchLineResult { CustomId = "hand", Outcome = "ok", StatusCode = 200, Usage = new TokenUsage(1000, 0, 0, 0, 1500), ServedModel = "gpt-4o-mini" };
        var r = BatchLedger.Record(batch, line, "gpt-4o-mini", catalog, DateTimeOffset.UnixEpoch, "openai");
        Assert.Equal(0.000525m, r.Cost);
        Assert.Equal(0.00105m, r.CounterfactualCost);
        Assert.Equal(0.000525m, r.SavingBatch);
        Assert.True(r.Batch);
        Assert.Equal(r.Id, BatchLedger.RecordId("batch_bsrhand", "hand"));
    }

    [Fact]
    public async Task Reading_results_again_and_collecting_again_never_bills_twice()
    {
        var id = await SubmitOpenAI("batch-reread", ChatLine("a", "one"), ChatLine("b", "two"));
        var rows = await _gw.RowsAsync(r => r.BatchId == id, 2);
        var total = rows.Sum(r => r.Cost);
        for (var i = 0; i < 3; i++)
        {
            var (_, b) = await Send(_gw.Http, HttpMethod.Get, "/v1/batches/" + id, _key);
            using var req = new HttpRequestMessage(HttpMethod.Get, $"/v1/files/{b!["output_file_id"]}/content");
            req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _key);
            Assert.Equal(HttpStatusCode.OK, (await _gw.Http.SendAsync(req)).StatusCode);
        }
        // a collection that runs again (a crash after the rows, before the batch was marked collected) writes nothing new
        var state = (await _gw.Batches.FindBatchAsync(id, default))!;
        await _gw.Batches.SaveBatchAsync(state with { Collected = false }, default);
        await _gw.Services.GetRequiredService<BatchPoller>().PollOnceAsync(default);
        await Task.Delay(300); // the ledger writer's next batch (at most 50 ms) has reached the store
        var after = await _gw.RowsAsync(r => r.BatchId == id, 3, waitMs: 300);
        Assert.Equal(2, after.Count);
        Assert.Equal(total, after.Sum(r => r.Cost));
        Assert.True((await _gw.Batches.FindBatchAsync(id, default))!.Collected);
    }

    private static string AnthropicBatch(params (string Id, string Text)[] requests) => new JsonObject
    {
        ["requests"] = new JsonArray(requests.Select(r => (JsonNode)new JsonObject
        {
            ["custom_id"] = r.Id,
            ["params"] = new JsonObject { ["model"] = "claude-haiku-4-5", ["max_tokens"] = 300, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = r.Text }) },
        }).ToArray()),
    }.ToJsonString();

    [Fact]
    public async Task Anthropic_batch_rows_are_written_by_the_poller_though_nobody_reads_the_results()
    {
        var (status, created) = await Send(_gw.Http, HttpMethod.Post, "/v1/messages/batches", _key, Json(AnthropicBatch(("r1", "hi [[sim:tokens=100]]"), ("r2", "oops [[sim:batch=error]]"))), anthropic: true, feature: "batch-anthropic");
        Assert.True(status == HttpStatusCode.OK, created?.ToJsonString());
        var id = created!["id"]!.GetValue<string>();
        Assert.StartsWith("msgbatch_bsr", id);
        // nobody asks about the batch again: the poller finds it ended and writes its rows
        var rows = await _gw.RowsAsync(r => r.BatchId == id, 2);
        Assert.Equal(2, rows.Count);
        var ok = rows.Single(r => r.CustomId == "r1");
        Assert.Equal("ok", ok.Outcome);
        Assert.Equal((ok.InputTokens * 0.5m + ok.OutputTokens * 2.5m) / 1_000_000m, ok.Cost);
        Assert.Equal(ok.Cost, ok.SavingBatch);
        Assert.Equal("batch-anthropic", ok.Feature);
        var err = rows.Single(r => r.CustomId == "r2");
        Assert.Equal(("client_error", 0m, "invalid_request_error"), (err.Outcome, err.Cost!.Value, err.ErrorType));

        var (_, batch) = await Send(_gw.Http, HttpMethod.Get, "/v1/messages/batches/" + id, _key, anthropic: true);
        Assert.Equal("ended", batch!["processing_status"]!.GetValue<string>());
        Assert.StartsWith(_gw.Http.BaseAddress!.ToString().TrimEnd('/') + $"/v1/messages/batches/{id}/results", batch["results_url"]!.GetValue<string>());
        using var req = new HttpRequestMessage(HttpMethod.Get, $"/v1/messages/batches/{id}/results");
        req.Headers.Add("x-api-key", _key);
        var lines = (await (await _gw.Http.SendAsync(req)).Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        var (_, list) = await Send(_gw.Http, HttpMethod.Get, "/v1/messages/batches", _key, anthropic: true);
        Assert.Contains(list!["data"]!.AsArray(), b => b!["id"]!.GetValue<string>() == id);
        var (ds, deleted) = await Send(_gw.Http, HttpMethod.Delete, "/v1/messages/batches/" + id, _key, anthropic: true);
        Assert.Equal(HttpStatusCode.OK, ds);
        Assert.Equal("message_batch_deleted", deleted!["type"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("{\"custom_id\":\"a\",\"method\":\"GET\",\"url\":\"/v1/chat/completions\",\"body\":{}}", 1, "method")]
    [InlineData("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}", 1, "url")]
    [InlineData("OK_LINE\nnot json at all", 2, "line")]
    [InlineData("OK_LINE\nOK_LINE", 2, "custom_id")]
    [InlineData("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"gpt-4o-mini\"}}", 1, "body.messages")]
    [InlineData("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}", 1, "body.stream")]
    [InlineData("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}\n{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}", 2, "body.model")]
    [InlineData("{\"custom_id\":\"\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}", 1, "custom_id")]
    public async Task Every_line_is_checked_before_anything_goes_upstream_naming_line_and_field(string jsonl, int line, string field)
    {
        jsonl = jsonl.Replace("OK_LINE", ChatLine("a", "fine"), StringComparison.Ordinal);
        var before = _gw.Simulator.RequestCount;
        var (status, error) = await Send(_gw.Http, HttpMethod.Post, "/v1/files", _key, Upload(jsonl));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var message = error!["error"]!["message"]!.GetValue<string>();
        Assert.Contains($"line {line}, field '{field}'", message);
        Assert.Equal(field, error["error"]!["param"]!.GetValue<string>());
        Assert.Equal(before, _gw.Simulator.RequestCount); // nothing reached the provider
    }

    [Theory]
    [InlineData("""{"requests":[{"custom_id":"bad id!","params":{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"x"}]}}]}""", "requests.0.custom_id")]
    [InlineData("""{"requests":[{"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"x"}]}},{"custom_id":"b","params":{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"x"}]}}]}""", "requests.1.params.max_tokens")]
    [InlineData("""{"requests":[{"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"x"}]}},{"custom_id":"b","params":{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"x"}]}}]}""", "requests.1.params.model")]
    [InlineData("""{"requests":[]}""", "requests")]
    [InlineData("""[1,2]""", "requests")]
    public async Task Anthropic_requests_are_checked_naming_the_index_and_field(string body, string field)
    {
        var before = _gw.Simulator.RequestCount;
        var (status, error) = await Send(_gw.Http, HttpMethod.Post, "/v1/messages/batches", _key, Json(body), anthropic: true);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("invalid_request_error", error!["error"]!["type"]!.GetValue<string>());
        Assert.StartsWith(field, error["error"]!["message"]!.GetValue<string>());
        Assert.Equal(before, _gw.Simulator.RequestCount);
    }

    [Fact]
    public async Task A_batch_whose_worst_case_does_not_fit_a_budget_is_refused_whole_naming_the_budget()
    {
        var key = await _gw.KeyAsync(customer: "batch-budget");
        using (var put = new HttpRequestMessage(HttpMethod.Put, "/admin/budgets/batch-budget-day")
        {
            Content = Json("""{"scope":"customer","value":"batch-budget","period":"day","limit_usd":0.001}"""),
        })
        {
            put.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "admin-test-key");
            Assert.Equal(HttpStatusCode.OK, (await _gw.Http.SendAsync(put)).StatusCode);
        }
        await _gw.Services.GetRequiredService<Bursar.Core.Budgets.BudgetManager>().ReloadAsync(default);
        // each line may write 4,000 tokens of gpt-4o-mini at $0.30/M batch: $0.0012 a line, worst case above the $0.001 budget
        var lines = Enumerable.Range(0, 5).Select(i => ChatLine("l" + i, "text", maxTokens: 4000));
        var (fs, file) = await Send(_gw.Http, HttpMethod.Post, "/v1/files", key, Upload(string.Join("\n", lines)));
        Assert.Equal(HttpStatusCode.OK, fs);
        var held = _gw.Simulator.BatchIds.Count;
        var (status, error) = await Send(_gw.Http, HttpMethod.Post, "/v1/batches", key, Json($$"""{"input_file_id":"{{file!["id"]}}","endpoint":"/v1/chat/completions","completion_window":"24h"}"""));
        Assert.Equal(HttpStatusCode.TooManyRequests, status);
        Assert.Equal("budget_exceeded", error!["error"]!["type"]!.GetValue<string>());
        var message = error["error"]!["message"]!.GetValue<string>();
        Assert.Contains("batch-budget-day", message);
        Assert.Contains("5 requests", message);
        Assert.Equal(held, _gw.Simulator.BatchIds.Count); // the provider never heard of it
        var status2 = _gw.Services.GetRequiredService<Bursar.Core.Budgets.BudgetManager>().Snapshot().Single(b => b.Budget.Id == "batch-budget-day");
        Assert.Equal(0m, status2.ReservedUsd); // nothing stays held
    }

    [Fact]
    public async Task A_batch_that_fits_holds_its_worst_case_until_its_lines_settle()
    {
        var key = await _gw.KeyAsync(customer: "batch-fits");
        using (var put = new HttpRequestMessage(HttpMethod.Put, "/admin/budgets/batch-fits-day") { Content = Json("""{"scope":"customer","value":"batch-fits","period":"day","limit_usd":1}""") })
        {
            put.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "admin-test-key");
            Assert.Equal(HttpStatusCode.OK, (await _gw.Http.SendAsync(put)).StatusCode);
        }
        var budgets = _gw.Services.GetRequiredService<Bursar.Core.Budgets.BudgetManager>();
        await budgets.ReloadAsync(default);
        var (_, file) = await Send(_gw.Http, HttpMethod.Post, "/v1/files", key, Upload(ChatLine("x", "one") + "\n" + ChatLine("y", "two")));
        var (status, batch) = await Send(_gw.Http, HttpMethod.Post, "/v1/batches", key, Json($$"""{"input_file_id":"{{file!["id"]}}","endpoint":"/v1/chat/completions","completion_window":"24h"}"""));
        Assert.Equal(HttpStatusCode.OK, status);
        var id = batch!["id"]!.GetValue<string>();
        var rows = await _gw.RowsAsync(r => r.BatchId == id, 2);
        Assert.Equal(2, rows.Count);
        for (var i = 0; i < 100 && budgets.Snapshot().Single(b => b.Budget.Id == "batch-fits-day").ReservedUsd != 0; i++) await Task.Delay(20);
        var s = budgets.Snapshot().Single(b => b.Budget.Id == "batch-fits-day");
        Assert.Equal(0m, s.ReservedUsd);
        Assert.Equal(rows.Sum(r => r.Cost!.Value), s.SpentUsd);
    }

    public static TheoryData<string, string, string, HttpStatusCode> HostileRequests => new()
    {
        { "POST", "/v1/files", "not multipart", HttpStatusCode.BadRequest },
        { "POST", "/v1/batches", "{not json", HttpStatusCode.BadRequest },
        { "POST", "/v1/batches", "[]", HttpStatusCode.BadRequest },
        { "POST", "/v1/batches", """{"input_file_id":"file-nope","endpoint":"/v1/chat/completions","completion_window":"24h"}""", HttpStatusCode.NotFound },
        { "POST", "/v1/batches", """{"input_file_id":"x","endpoint":"/v1/chat/completions","completion_window":"1h"}""", HttpStatusCode.BadRequest },
        { "POST", "/v1/batches", """{"input_file_id":7,"endpoint":[],"completion_window":{}}""", HttpStatusCode.BadRequest },
        { "GET", "/v1/batches/batch_nope", "", HttpStatusCode.NotFound },
        { "POST", "/v1/batches/batch_nope/cancel", "", HttpStatusCode.NotFound },
        { "GET", "/v1/files/file-nope/content", "", HttpStatusCode.NotFound },
        { "DELETE", "/v1/files/file-nope", "", HttpStatusCode.NotFound },
        { "GET", "/v1/batches?limit=0", "", HttpStatusCode.BadRequest },
        { "GET", "/v1/batches?limit=abc", "", HttpStatusCode.BadRequest },
        { "POST", "/v1/messages/batches", "{\"requests\":", HttpStatusCode.BadRequest },
        { "POST", "/v1/messages/batches", "{\"requests\":[null]}", HttpStatusCode.BadRequest },
        { "GET", "/v1/messages/batches/msgbatch_nope/results", "", HttpStatusCode.NotFound },
        { "DELETE", "/v1/messages/batches/msgbatch_nope", "", HttpStatusCode.NotFound },
    };

    [Theory]
    [MemberData(nameof(HostileRequests))]
    public async Task Hostile_requests_get_provider_shaped_4xx_never_a_500(string method, string path, string body, HttpStatusCode expected)
    {
        var anthropic = path.StartsWith("/v1/messages", StringComparison.Ordinal);
        var (status, error) = await Send(_gw.Http, new HttpMethod(method), path, _key, body.Length == 0 ? null : Json(body), anthropic);
        Assert.Equal(expected, status);
        Assert.NotNull(error!["error"]!["message"]);
        if (anthropic) Assert.Equal("error", error["type"]!.GetValue<string>());
    }

    [Fact]
    public async Task Hostile_uploads_bad_jsonl_huge_lines_wrong_purpose_broken_multipart_are_4xx()
    {
        var huge = ChatLine("big", new string('x', 70_000)); // over Bursar:Batch:MaxLineBytes (64 KB here)
        var cases = new (HttpContent Content, string Field)[]
        {
            (Upload(huge), "line"),
            (Upload(ChatLine("a", "x"), purpose: "fine-tune"), "purpose"),
            (Upload("\u0000\u0001garbage\n{{{"), "line"),
            (Upload(""), "file"),
            (Upload("\n\n\n"), "file"),
        };
        foreach (var (content, field) in cases)
        {
            var (status, error) = await Send(_gw.Http, HttpMethod.Post, "/v1/files", _key, content);
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Equal(field, error!["error"]!["param"]!.GetValue<string>());
        }
        var broken = new ByteArrayContent("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n{\"a\":1}"u8.ToArray());
        broken.Headers.TryAddWithoutValidation("Content-Type", "multipart/form-data; boundary=b");
        var (bs, _) = await Send(_gw.Http, HttpMethod.Post, "/v1/files", _key, broken);
        Assert.Equal(HttpStatusCode.BadRequest, bs);
        var (ns, _) = await Send(_gw.Http, HttpMethod.Post, "/v1/files", "bsr_not_a_key", Upload(ChatLine("a", "x")));
        Assert.Equal(HttpStatusCode.Unauthorized, ns);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_dir, "batches"), "*.jsonl")); // nothing refused stays spooled
    }

    [Fact]
    public async Task Another_key_cannot_see_a_batch_or_its_files()
    {
        var id = await SubmitOpenAI("batch-tenancy", ChatLine("a", "mine"));
        var other = await _gw.KeyAsync();
        Assert.Equal(HttpStatusCode.NotFound, (await Send(_gw.Http, HttpMethod.Get, "/v1/batches/" + id, other)).Status);
        var (_, list) = await Send(_gw.Http, HttpMethod.Get, "/v1/batches", other);
        Assert.Empty(list!["data"]!.AsArray());
        var (_, mine) = await Send(_gw.Http, HttpMethod.Get, "/v1/batches?limit=5", _key);
        Assert.Contains(mine!["data"]!.AsArray(), b => b!["id"]!.GetValue<string>() == id);
    }
}

/// <summary>Batches survive a gateway restart: the poller resumes from the store and writes the rows the first gateway never wrote.</summary>
[Collection("batch")]
public sealed class BatchRestartTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-batch-restart-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public async Task A_restarted_gateway_resumes_polling_and_writes_each_line_once()
    {
        string id, key;
        await using (var first = await BatchHost.StartAsync(_dir, "--Bursar:Simulator:BatchProcessingTime=00:00:02"))
        {
            key = await first.KeyAsync();
            var (_, file) = await BatchGatewayTests.Send(first.Http, HttpMethod.Post, "/v1/files", key, BatchGatewayTests.Upload(BatchGatewayTests.ChatLine("p", "one") + "\n" + BatchGatewayTests.ChatLine("q", "two")));
            var (status, batch) = await BatchGatewayTests.Send(first.Http, HttpMethod.Post, "/v1/batches", key,
                new StringContent($$"""{"input_file_id":"{{file!["id"]}}","endpoint":"/v1/chat/completions","completion_window":"24h"}""", Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, status);
            id = batch!["id"]!.GetValue<string>();
            Assert.Equal("in_progress", batch["status"]!.GetValue<string>());
            Assert.Empty(await first.RowsAsync(r => r.BatchId == id, 1, waitMs: 200));
        } // stopped before the batch ended
        await Task.Delay(2100);
        await using var second = await BatchHost.StartAsync(_dir, "--Bursar:Simulator:BatchProcessingTime=00:00:02");
        var rows = await second.RowsAsync(r => r.BatchId == id, 2);
        Assert.Equal(["p", "q"], rows.Select(r => r.CustomId).Order());
        Assert.All(rows, r => Assert.Equal("ok", r.Outcome));
        await second.Services.GetRequiredService<BatchPoller>().PollOnceAsync(default);
        Assert.Equal(2, (await second.RowsAsync(r => r.BatchId == id, 3, waitMs: 300)).Count);
    }
}
