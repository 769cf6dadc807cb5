using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Pricing;
using Bursar.Providers.Simulator;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Providers.Tests;

/// <summary>The Simulator's batch APIs held to PROVIDER_API.md §3 (Anthropic Message Batches) and §6 (OpenAI Files + Batches).</summary>
public sealed class SimulatorBatchTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-simbatch-" + Guid.NewGuid().ToString("N"));
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-11-23T12:00:00Z"));

    private (ProviderSimulator Sim, HttpClient Http) Start(TimeSpan? processing = null)
    {
        var sim = new ProviderSimulator(new SimulatorOptions { BatchDirectory = _dir, BatchProcessingTime = processing ?? TimeSpan.Zero }, _time);
        return (sim, new HttpClient(new SimulatorHttpHandler(sim)) { BaseAddress = new Uri("http://simulator/") });
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private static string ChatLine(string id, string text, string model = "gpt-4o-mini", string? extra = null) =>
        $$$"""{"custom_id":"{{{id}}}","method":"POST","url":"/v1/chat/completions","body":{"model":"{{{model}}}","messages":[{"role":"user","content":"{{{text}}}"}]{{{extra}}}}}""";

    private static async Task<(int Status, JsonNode? Body)> Send(HttpClient http, HttpMethod method, string path, HttpContent? content = null, bool anthropic = false)
    {
        using var req = new HttpRequestMessage(method, path) { Content = content };
        if (anthropic) req.Headers.Add("x-api-key", "k");
        else req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "k");
        using var resp = await http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        JsonNode? node = null;
        try { node = text.Length == 0 ? null : JsonNode.Parse(text); } catch (System.Text.Json.JsonException) { node = JsonValue.Create(text); }
        return ((int)resp.StatusCode, node);
    }

    private static async Task<string> Text(HttpClient http, string path, bool anthropic = false)
    {
        using var req = new HttpRequestMessage(HttpMethod.Get, path);
        if (anthropic) req.Headers.Add("x-api-key", "k");
        else req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "k");
        using var resp = await http.SendAsync(req);
        Assert.Equal(200, (int)resp.StatusCode);
        return await resp.Content.ReadAsStringAsync();
    }

    private static MultipartFormDataContent Upload(string jsonl, string purpose = "batch")
    {
        var form = new MultipartFormDataContent();
        form.Add(new ByteArrayContent(Encoding.UTF8.GetBytes(jsonl)), "file", "in.jsonl");
        form.Add(new StringContent(purpose), "purpose");
        return form;
    }

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    private static async Task<string> CreateOpenAIBatch(HttpClient http, params string[] lines)
    {
        var (status, file) = await Send(http, HttpMethod.Post, "/v1/files", Upload(string.Join("\n", lines) + "\n"));
        Assert.Equal(200, status);
        Assert.Equal("batch", file!["purpose"]!.GetValue<string>());
        var (s2, batch) = await Send(http, HttpMethod.Post, "/v1/batches", Json($$$"""{"input_file_id":"{{{file["id"]}}}","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"bursar":"t"}}"""));
        Assert.Equal(200, s2);
        return batch!["id"]!.GetValue<string>();
    }

    [Fact]
    public async Task OpenAI_batch_answers_every_line_and_bills_at_the_batch_rate()
    {
        var (sim, http) = Start();
        var id = await CreateOpenAIBatch(http, ChatLine("a", "hello [[sim:tokens=1500]]"), ChatLine("b", "fails [[sim:batch=error]]"), ChatLine("c", "late [[sim:batch=expire]]"));
        var (_, batch) = await Send(http, HttpMethod.Get, "/v1/batches/" + id);
        Assert.Equal("completed", batch!["status"]!.GetValue<string>());
        Assert.Equal(3, batch["request_counts"]!["total"]!.GetValue<int>());
        Assert.Equal(1, batch["request_counts"]!["completed"]!.GetValue<int>());
        Assert.Equal(2, batch["request_counts"]!["failed"]!.GetValue<int>());
        Assert.Equal("t", batch["metadata"]!["bursar"]!.GetValue<string>());

        var output = (await Text(http, $"/v1/files/{batch["output_file_id"]}/content")).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToArray();
        var ok = Assert.Single(output);
        Assert.Equal("a", ok["custom_id"]!.GetValue<string>());
        Assert.Equal(200, ok["response"]!["status_code"]!.GetValue<int>());
        var usage = ok["response"]!["body"]!["usage"]!;
        var completion = usage["completion_tokens"]!.GetValue<long>();
        Assert.InRange(completion, 1500, 1501); // the requested 1,500 words' tokens and the closing period

        var errors = (await Text(http, $"/v1/files/{batch["error_file_id"]}/content")).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToDictionary(l => l["custom_id"]!.GetValue<string>());
        Assert.Equal(400, errors["b"]["response"]!["status_code"]!.GetValue<int>());
        Assert.Equal("batch_expired", errors["c"]["error"]!["code"]!.GetValue<string>());

        // the bill: the succeeded line's tokens at gpt-4o-mini's batch rates (0.075 / 0.30 per million)
        var prompt = usage["prompt_tokens"]!.GetValue<long>();
        Assert.Equal((prompt * 0.075m + completion * 0.30m) / 1_000_000m, sim.BatchBilledUsd(id));
    }

    [Fact]
    public async Task OpenAI_batch_stays_in_progress_for_its_processing_time_and_can_be_cancelled()
    {
        var (_, http) = Start(TimeSpan.FromMinutes(10));
        var id = await CreateOpenAIBatch(http, ChatLine("a", "one"), ChatLine("b", "two"));
        Assert.Equal("in_progress", (await Send(http, HttpMethod.Get, "/v1/batches/" + id)).Body!["status"]!.GetValue<string>());
        _time.Advance(TimeSpan.FromMinutes(11));
        Assert.Equal("completed", (await Send(http, HttpMethod.Get, "/v1/batches/" + id)).Body!["status"]!.GetValue<string>());

        var other = await CreateOpenAIBatch(http, ChatLine("x", "three"));
        var (cs, cancelling) = await Send(http, HttpMethod.Post, $"/v1/batches/{other}/cancel");
        Assert.Equal(200, cs);
        Assert.Equal("cancelling", cancelling!["status"]!.GetValue<string>());
        var (_, cancelled) = await Send(http, HttpMethod.Get, "/v1/batches/" + other);
        Assert.Equal("cancelled", cancelled!["status"]!.GetValue<string>());
        var line = JsonNode.Parse((await Text(http, $"/v1/files/{cancelled["error_file_id"]}/content")).Trim())!;
        Assert.Equal("batch_cancelled", line["error"]!["code"]!.GetValue<string>());
        var (again, error) = await Send(http, HttpMethod.Post, $"/v1/batches/{other}/cancel");
        Assert.Equal(409, again);
        Assert.Contains("cancelled", error!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_batch_slower_than_its_window_expires_whole()
    {
        var (_, http) = Start(TimeSpan.FromHours(30));
        var id = await CreateOpenAIBatch(http, ChatLine("a", "one"));
        _time.Advance(TimeSpan.FromHours(23));
        Assert.Equal("in_progress", (await Send(http, HttpMethod.Get, "/v1/batches/" + id)).Body!["status"]!.GetValue<string>());
        _time.Advance(TimeSpan.FromHours(2));
        var (_, b) = await Send(http, HttpMethod.Get, "/v1/batches/" + id);
        Assert.Equal("expired", b!["status"]!.GetValue<string>());
        Assert.True(b["expired_at"]!.GetValue<long>() > 0);
        Assert.Equal("batch_expired", JsonNode.Parse((await Text(http, $"/v1/files/{b["error_file_id"]}/content")).Trim())!["error"]!["code"]!.GetValue<string>());
    }

    [Fact]
    public async Task Input_file_lines_are_validated_naming_the_line()
    {
        var (_, http) = Start();
        var (_, file) = await Send(http, HttpMethod.Post, "/v1/files", Upload(ChatLine("a", "x") + "\nnot json\n" + ChatLine("a", "dup") + "\n" + ChatLine("d", "y", "gpt-4o")));
        var (status, batch) = await Send(http, HttpMethod.Post, "/v1/batches", Json($$"""{"input_file_id":"{{file!["id"]}}","endpoint":"/v1/chat/completions","completion_window":"24h"}"""));
        Assert.Equal(200, status);
        Assert.Equal("failed", batch!["status"]!.GetValue<string>());
        var errors = batch["errors"]!["data"]!.AsArray().Select(e => (Line: e!["line"]!.GetValue<int>(), Code: e["code"]!.GetValue<string>())).ToArray();
        Assert.Contains((2, "invalid_json_line"), errors);
        Assert.Contains((3, "duplicate_custom_id"), errors);
        Assert.Contains((4, "mismatched_model"), errors);
    }

    [Theory]
    [InlineData("fine-tune-x", "purpose")]
    [InlineData("", "purpose")]
    public async Task Upload_with_a_wrong_purpose_is_a_400_naming_the_field(string purpose, string param)
    {
        var (_, http) = Start();
        var (status, error) = await Send(http, HttpMethod.Post, "/v1/files", Upload(ChatLine("a", "x"), purpose));
        Assert.Equal(400, status);
        Assert.Equal(param, error!["error"]!["param"]!.GetValue<string>());
    }

    [Fact]
    public async Task Hostile_file_requests_are_provider_shaped_errors()
    {
        var (_, http) = Start();
        Assert.Equal(400, (await Send(http, HttpMethod.Post, "/v1/files", Json("{}"))).Status); // not multipart
        var broken = new ByteArrayContent("--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc"u8.ToArray());
        broken.Headers.TryAddWithoutValidation("Content-Type", "multipart/form-data; boundary=xyz");
        Assert.Equal(400, (await Send(http, HttpMethod.Post, "/v1/files", broken)).Status); // never terminated
        Assert.Equal(404, (await Send(http, HttpMethod.Get, "/v1/files/file-nope")).Status);
        Assert.Equal(404, (await Send(http, HttpMethod.Get, "/v1/batches/batch_nope")).Status);
        var (_, txt) = await Send(http, HttpMethod.Post, "/v1/files", Upload("{}", "user_data"));
        var (s, e) = await Send(http, HttpMethod.Post, "/v1/batches", Json($$"""{"input_file_id":"{{txt!["id"]}}","endpoint":"/v1/chat/completions","completion_window":"24h"}"""));
        Assert.Equal(400, s);
        Assert.Equal("input_file_id", e!["error"]!["param"]!.GetValue<string>());
        Assert.Equal(400, (await Send(http, HttpMethod.Post, "/v1/batches", Json("""{"input_file_id":"x","endpoint":"/v1/chat/completions","completion_window":"1h"}"""))).Status);
        var (ds, deleted) = await Send(http, HttpMethod.Delete, "/v1/files/" + txt["id"]);
        Assert.Equal(200, ds);
        Assert.True(deleted!["deleted"]!.GetValue<bool>());
    }

    private static string AnthropicBatch(params (string Id, string Text)[] requests) => new JsonObject
    {
        ["requests"] = new JsonArray(requests.Select(r => (JsonNode)new JsonObject
        {
            ["custom_id"] = r.Id,
            ["params"] = new JsonObject { ["model"] = "claude-haiku-4-5", ["max_tokens"] = 200, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = r.Text }) },
        }).ToArray()),
    }.ToJsonString();

    [Fact]
    public async Task Anthropic_message_batch_lifecycle()
    {
        var (sim, http) = Start(TimeSpan.FromMinutes(5));
        var (status, created) = await Send(http, HttpMethod.Post, "/v1/messages/batches", Json(AnthropicBatch(("r1", "hi"), ("r2", "oops [[sim:batch=error]]"), ("r3", "late [[sim:batch=expire]]"))), anthropic: true);
        Assert.Equal(200, status);
        var id = created!["id"]!.GetValue<string>();
        Assert.StartsWith("msgbatch_", id);
        Assert.Equal("in_progress", created["processing_status"]!.GetValue<string>());
        Assert.Equal(3, created["request_counts"]!["processing"]!.GetValue<int>());
        Assert.Null(created["results_url"]);
        Assert.Equal(400, (await Send(http, HttpMethod.Get, $"/v1/messages/batches/{id}/results", anthropic: true)).Status);
        Assert.Equal(400, (await Send(http, HttpMethod.Delete, $"/v1/messages/batches/{id}", anthropic: true)).Status);

        _time.Advance(TimeSpan.FromMinutes(6));
        var (_, ended) = await Send(http, HttpMethod.Get, "/v1/messages/batches/" + id, anthropic: true);
        Assert.Equal("ended", ended!["processing_status"]!.GetValue<string>());
        Assert.Equal(1, ended["request_counts"]!["succeeded"]!.GetValue<int>());
        Assert.Equal(1, ended["request_counts"]!["errored"]!.GetValue<int>());
        Assert.Equal(1, ended["request_counts"]!["expired"]!.GetValue<int>());
        Assert.EndsWith($"/v1/messages/batches/{id}/results", ended["results_url"]!.GetValue<string>());

        var results = (await Text(http, $"/v1/messages/batches/{id}/results", anthropic: true)).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToDictionary(l => l["custom_id"]!.GetValue<string>());
        Assert.Equal("succeeded", results["r1"]["result"]!["type"]!.GetValue<string>());
        Assert.Equal("batch", results["r1"]["result"]!["message"]!["usage"]!["service_tier"]!.GetValue<string>());
        Assert.Equal("errored", results["r2"]["result"]!["type"]!.GetValue<string>());
        Assert.Equal("invalid_request_error", results["r2"]["result"]!["error"]!["error"]!["type"]!.GetValue<string>());
        Assert.Equal("expired", results["r3"]["result"]!["type"]!.GetValue<string>());
        var u = results["r1"]["result"]!["message"]!["usage"]!;
        var price = new PriceCatalog(PriceFiles.LoadBuiltIn()).Find("claude-haiku-4-5").Price!;
        Assert.Equal((u["input_tokens"]!.GetValue<long>() * 0.5m + u["output_tokens"]!.GetValue<long>() * 2.5m) / 1_000_000m, sim.BatchBilledUsd(id));
        Assert.Equal(0.5m, price.RatesFor(10, batch: true).Input);

        var (_, list) = await Send(http, HttpMethod.Get, "/v1/messages/batches?limit=10", anthropic: true);
        Assert.Equal(id, list!["data"]![0]!["id"]!.GetValue<string>());
        Assert.False(list["has_more"]!.GetValue<bool>());
        var (ds, deleted) = await Send(http, HttpMethod.Delete, $"/v1/messages/batches/{id}", anthropic: true);
        Assert.Equal(200, ds);
        Assert.Equal("message_batch_deleted", deleted!["type"]!.GetValue<string>());
        Assert.Equal(404, (await Send(http, HttpMethod.Get, "/v1/messages/batches/" + id, anthropic: true)).Status);
    }

    [Fact]
    public async Task Anthropic_cancel_marks_unfinished_requests_canceled()
    {
        var (_, http) = Start(TimeSpan.FromHours(1));
        var (_, created) = await Send(http, HttpMethod.Post, "/v1/messages/batches", Json(AnthropicBatch(("a", "one"), ("b", "two"))), anthropic: true);
        var id = created!["id"]!.GetValue<string>();
        var (_, canceling) = await Send(http, HttpMethod.Post, $"/v1/messages/batches/{id}/cancel", anthropic: true);
        Assert.Equal("canceling", canceling!["processing_status"]!.GetValue<string>());
        var (_, ended) = await Send(http, HttpMethod.Get, "/v1/messages/batches/" + id, anthropic: true);
        Assert.Equal("ended", ended!["processing_status"]!.GetValue<string>());
        Assert.Equal(2, ended["request_counts"]!["canceled"]!.GetValue<int>());
        var lines = (await Text(http, $"/v1/messages/batches/{id}/results", anthropic: true)).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.All(lines, l => Assert.Equal("canceled", JsonNode.Parse(l)!["result"]!["type"]!.GetValue<string>()));
    }

    [Theory]
    [InlineData("""{"requests":[]}""", "requests")]
    [InlineData("""{"requests":[{"custom_id":"bad id!","params":{}}]}""", "requests.0.custom_id")]
    [InlineData("""{"requests":[{"custom_id":"a","params":{}},{"custom_id":"a","params":{}}]}""", "requests.1.custom_id")]
    [InlineData("""{"requests":[{"custom_id":"a"}]}""", "requests.0.params")]
    [InlineData("""{"requests":[{"custom_id":"a","params":{"max_tokens":0}}]}""", "requests.0.params.max_tokens")]
    public async Task Anthropic_create_rejects_bad_requests_naming_the_index(string body, string field)
    {
        var (_, http) = Start();
        var (status, error) = await Send(http, HttpMethod.Post, "/v1/messages/batches", Json(body), anthropic: true);
        Assert.Equal(400, status);
        Assert.StartsWith(field, error!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_restarted_Simulator_over_the_same_folder_still_holds_its_batches()
    {
        var (_, http) = Start(TimeSpan.FromMinutes(1));
        var id = await CreateOpenAIBatch(http, ChatLine("a", "kept"));
        http.Dispose();
        var (_, again) = Start(TimeSpan.FromMinutes(1));
        _time.Advance(TimeSpan.FromMinutes(2));
        var (status, b) = await Send(again, HttpMethod.Get, "/v1/batches/" + id);
        Assert.Equal(200, status);
        Assert.Equal("completed", b!["status"]!.GetValue<string>());
    }
}
