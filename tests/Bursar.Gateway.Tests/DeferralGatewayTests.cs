using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;
using Bursar.Core.Ledger;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Gateway.Tests;

/// <summary>The batch lever as a stage: deferrable calls answered 202, queued durably, sent as provider batches, answered with the synchronous body.</summary>
[Collection("batch")]
public sealed class DeferralGatewayTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-defer-" + Guid.NewGuid().ToString("N"));
    private BatchHost _gw = null!;
    private string _key = "";

    internal static readonly string[] FastFlush = ["--Bursar:Deferral:FlushInterval=00:00:00.050", "--Bursar:Deferral:MaxWait=00:00:00.200", "--Bursar:Deferral:MinDelay=00:00:00",
        "--Bursar:Routing:Routes:0:Name=nightly", "--Bursar:Routing:Routes:0:Task=nightly-report", "--Bursar:Routing:Routes:0:Defer=01:00:00"];

    public async Task InitializeAsync()
    {
        _gw = await BatchHost.StartAsync(_dir, FastFlush);
        _key = await _gw.KeyAsync();
    }

    public async Task DisposeAsync()
    {
        await _gw.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    internal static string OpenAIBody(string text, string model = "gpt-4o-mini") =>
        new JsonObject { ["model"] = model, ["max_completion_tokens"] = 200, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) }.ToJsonString();

    internal static string AnthropicBody(string text) =>
        new JsonObject { ["model"] = "claude-haiku-4-5", ["max_tokens"] = 200, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) }.ToJsonString();

    internal static async Task<(HttpStatusCode Status, string Body, HttpResponseMessage Resp)> Call(HttpClient http, string key, string path, string body, string feature, string? defer = null, string? task = null)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        if (path == "/v1/messages") { req.Headers.Add("x-api-key", key); req.Headers.Add("anthropic-version", "2023-06-01"); }
        else req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        req.Headers.Add("x-bursar-feature", feature);
        if (defer is not null) req.Headers.Add("x-bursar-defer", defer);
        if (task is not null) req.Headers.Add("x-bursar-task", task);
        var resp = await http.SendAsync(req);
        return (resp.StatusCode, await resp.Content.ReadAsStringAsync(), resp);
    }

    internal static async Task<(HttpStatusCode Status, string Body)> AwaitJob(HttpClient http, string key, string location, bool anthropic = false, int waitMs = 15_000)
    {
        for (var waited = 0; ; waited += 50)
        {
            using var req = new HttpRequestMessage(HttpMethod.Get, location);
            if (anthropic) req.Headers.Add("x-api-key", key); else req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            using var resp = await http.SendAsync(req);
            var text = await resp.Content.ReadAsStringAsync();
            if (resp.StatusCode != HttpStatusCode.Accepted || waited >= waitMs) return (resp.StatusCode, text);
            Assert.Equal("bursar.job", JsonNode.Parse(text)!["object"]!.GetValue<string>());
            await Task.Delay(50);
        }
    }

    [Theory]
    [InlineData("/v1/chat/completions")]
    [InlineData("/v1/messages")]
    public async Task A_deferred_call_is_accepted_then_answered_with_the_synchronous_body_and_one_row(string path)
    {
        var feature = "defer-" + (path == "/v1/messages" ? "anthropic" : "openai");
        var body = path == "/v1/messages" ? AnthropicBody("summarize the night [[sim:tokens=40]]") : OpenAIBody("summarize the night [[sim:tokens=40]]");
        var (syncStatus, syncBody, _) = await Call(_gw.Http, _key, path, body, feature + "-sync");
        Assert.Equal(HttpStatusCode.OK, syncStatus);

        var (status, accepted, resp) = await Call(_gw.Http, _key, path, body, feature, defer: "1h");
        Assert.Equal(HttpStatusCode.Accepted, status);
        var id = JsonNode.Parse(accepted)!["id"]!.GetValue<string>();
        Assert.StartsWith("job_", id);
        Assert.Equal("/v1/bursar/jobs/" + id, resp.Headers.Location!.ToString());

        var (done, answer) = await AwaitJob(_gw.Http, _key, resp.Headers.Location.ToString(), anthropic: path == "/v1/messages");
        Assert.Equal(HttpStatusCode.OK, done);
        var sync = JsonNode.Parse(syncBody)!;
        var deferred = JsonNode.Parse(answer)!;
        if (path == "/v1/messages")
        {
            Assert.Equal("message", deferred["type"]!.GetValue<string>());
            Assert.Equal(sync["content"]![0]!["text"]!.GetValue<string>(), deferred["content"]![0]!["text"]!.GetValue<string>());
            Assert.Equal(sync["usage"]!["output_tokens"]!.GetValue<long>(), deferred["usage"]!["output_tokens"]!.GetValue<long>());
        }
        else
        {
            Assert.Equal("chat.completion", deferred["object"]!.GetValue<string>());
            Assert.Equal(sync["choices"]![0]!["message"]!["content"]!.GetValue<string>(), deferred["choices"]![0]!["message"]!["content"]!.GetValue<string>());
            Assert.Equal(sync["usage"]!["completion_tokens"]!.GetValue<long>(), deferred["usage"]!["completion_tokens"]!.GetValue<long>());
        }

        var rows = await _gw.RowsAsync(r => r.Feature == feature, 1);
        var row = Assert.Single(rows); // the 202 left no row of its own: the job has exactly one
        Assert.Equal(BatchLedger.RecordId("job", id), row.Id);
        Assert.True(row.Batch);
        Assert.Equal(id, row.CustomId);
        Assert.Equal("ok", row.Outcome);
        var syncRow = Assert.Single(await _gw.RowsAsync(r => r.Feature == feature + "-sync", 1));
        Assert.Equal(syncRow.Cost, row.Cost + row.SavingBatch); // half price, the other half credited to the batch lever
        Assert.Equal(syncRow.Cost / 2, row.Cost);
        // reading it again changes nothing
        Assert.Equal(HttpStatusCode.OK, (await AwaitJob(_gw.Http, _key, resp.Headers.Location.ToString(), anthropic: path == "/v1/messages")).Status);
        Assert.Single(await _gw.RowsAsync(r => r.Feature == feature, 2, waitMs: 200));
    }

    [Fact]
    public async Task A_route_policy_defers_without_the_header()
    {
        var (status, accepted, resp) = await Call(_gw.Http, _key, "/v1/chat/completions", OpenAIBody("nightly numbers"), "defer-route", task: "nightly-report");
        Assert.Equal(HttpStatusCode.Accepted, status);
        var (done, _) = await AwaitJob(_gw.Http, _key, resp.Headers.Location!.ToString());
        Assert.Equal(HttpStatusCode.OK, done);
        var row = Assert.Single(await _gw.RowsAsync(r => r.Feature == "defer-route", 1));
        Assert.Equal("nightly", row.Route);
        Assert.True(row.Batch);
        // a streamed call on the same route cannot wait: it runs now
        var streamed = new JsonObject { ["model"] = "gpt-4o-mini", ["stream"] = true, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "now" }) }.ToJsonString();
        Assert.Equal(HttpStatusCode.OK, (await Call(_gw.Http, _key, "/v1/chat/completions", streamed, "defer-route-stream", task: "nightly-report")).Status);
    }

    [Fact]
    public async Task The_exact_cache_answers_before_deferral()
    {
        var body = new JsonObject { ["model"] = "gpt-4o-mini", ["temperature"] = 0, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "cached question" }) }.ToJsonString();
        Assert.Equal(HttpStatusCode.OK, (await Call(_gw.Http, _key, "/v1/chat/completions", body, "defer-cache")).Status);
        var (status, _, resp) = await Call(_gw.Http, _key, "/v1/chat/completions", body, "defer-cache", defer: "24h");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("hit", resp.Headers.GetValues("x-bursar-cache").Single());
    }

    [Theory]
    [InlineData("soon")]
    [InlineData("25h")]
    [InlineData("-1h")]
    [InlineData("1x")]
    public async Task A_bad_defer_header_is_a_400_naming_it(string value)
    {
        var (status, body, _) = await Call(_gw.Http, _key, "/v1/chat/completions", OpenAIBody("x"), "defer-bad", defer: value);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var e = JsonNode.Parse(body)!["error"]!;
        Assert.Equal("x-bursar-defer", e["param"]!.GetValue<string>());
        Assert.Contains(value, e["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_streamed_call_with_the_defer_header_is_a_400()
    {
        var streamed = new JsonObject { ["model"] = "gpt-4o-mini", ["stream"] = true, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "now" }) }.ToJsonString();
        var (status, body, _) = await Call(_gw.Http, _key, "/v1/chat/completions", streamed, "defer-stream", defer: "1h");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("streamed", JsonNode.Parse(body)!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_rejected_batch_falls_back_to_a_synchronous_call()
    {
        // the Simulator fails the OpenAI batch at validation: the job runs synchronously, at the standard rate, with one row
        var (status, _, resp) = await Call(_gw.Http, _key, "/v1/chat/completions", OpenAIBody("refuse me [[sim:batch=reject]]"), "defer-reject", defer: "1h");
        Assert.Equal(HttpStatusCode.Accepted, status);
        var (done, answer) = await AwaitJob(_gw.Http, _key, resp.Headers.Location!.ToString());
        Assert.Equal(HttpStatusCode.OK, done);
        Assert.Equal("chat.completion", JsonNode.Parse(answer)!["object"]!.GetValue<string>());
        var row = Assert.Single(await _gw.RowsAsync(r => r.Feature == "defer-reject", 1));
        Assert.False(row.Batch);
        Assert.Equal(0m, row.SavingBatch);
        Assert.Contains("synchronous fallback", row.ErrorMessage);
        Assert.Single(await _gw.RowsAsync(r => r.Feature == "defer-reject", 2, waitMs: 300));
    }

    [Fact]
    public async Task An_expired_line_falls_back_to_a_synchronous_call()
    {
        var (status, _, resp) = await Call(_gw.Http, _key, "/v1/messages", AnthropicBody("too slow [[sim:batch=expire]]"), "defer-expire", defer: "1h");
        Assert.Equal(HttpStatusCode.Accepted, status);
        var (done, answer) = await AwaitJob(_gw.Http, _key, resp.Headers.Location!.ToString(), anthropic: true);
        Assert.Equal(HttpStatusCode.OK, done);
        Assert.Equal("message", JsonNode.Parse(answer)!["type"]!.GetValue<string>());
        var row = Assert.Single(await _gw.RowsAsync(r => r.Feature == "defer-expire", 1));
        Assert.False(row.Batch);
        Assert.Equal("ok", row.Outcome);
    }

    [Fact]
    public async Task Another_key_cannot_read_a_job()
    {
        var (_, _, resp) = await Call(_gw.Http, _key, "/v1/chat/completions", OpenAIBody("private"), "defer-tenancy", defer: "1h");
        var other = await _gw.KeyAsync();
        using var req = new HttpRequestMessage(HttpMethod.Get, resp.Headers.Location!);
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", other);
        Assert.Equal(HttpStatusCode.NotFound, (await _gw.Http.SendAsync(req)).StatusCode);
        using var anon = new HttpRequestMessage(HttpMethod.Get, resp.Headers.Location!);
        Assert.Equal(HttpStatusCode.Unauthorized, (await _gw.Http.SendAsync(anon)).StatusCode);
    }

    [Theory]
    [InlineData(0, 15 * 60, 5, "MaxBatchSize")]
    [InlineData(50_001, 15 * 60, 5, "MaxBatchSize")]
    [InlineData(1000, 0, 5, "MaxWait")]
    [InlineData(1000, 24 * 3600, 5, "MaxWait")]
    [InlineData(1000, 60, 120, "FlushInterval")]
    public void Deferral_options_are_validated_naming_the_field(int size, int waitSeconds, int flushSeconds, string field)
    {
        var o = new DeferralOptions { MaxBatchSize = size, MaxWait = TimeSpan.FromSeconds(waitSeconds), FlushInterval = TimeSpan.FromSeconds(flushSeconds) };
        var e = Assert.Throws<InvalidOperationException>(o.Validate);
        Assert.Contains("Bursar:Deferral:" + field, e.Message);
        new DeferralOptions().Validate(); // the defaults (1,000 calls, 15 minutes) pass
    }
}

/// <summary>The flusher's two triggers: a full queue goes at once, a small one after MaxWait.</summary>
[Collection("batch")]
public sealed class DeferralFlushTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-flush-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public async Task A_queue_of_MaxBatchSize_jobs_is_flushed_as_one_batch_before_MaxWait()
    {
        await using var gw = await BatchHost.StartAsync(_dir, "--Bursar:Deferral:FlushInterval=00:00:00.050", "--Bursar:Deferral:MaxWait=00:10:00", "--Bursar:Deferral:MaxBatchSize=3");
        var key = await gw.KeyAsync();
        var before = gw.Simulator.BatchIds.Count;
        var locations = new List<string>();
        for (var i = 0; i < 2; i++)
        {
            var (s, _, r) = await DeferralGatewayTests.Call(gw.Http, key, "/v1/chat/completions", DeferralGatewayTests.OpenAIBody("job " + i), "flush-size", defer: "24h");
            Assert.Equal(HttpStatusCode.Accepted, s);
            locations.Add(r.Headers.Location!.ToString());
        }
        await Task.Delay(300);
        Assert.Equal(before, gw.Simulator.BatchIds.Count); // two jobs, ten minutes to go: still queued
        Assert.Equal(HttpStatusCode.Accepted, (await DeferralGatewayTests.AwaitJob(gw.Http, key, locations[0], waitMs: 0)).Status);
        var (s3, _, r3) = await DeferralGatewayTests.Call(gw.Http, key, "/v1/chat/completions", DeferralGatewayTests.OpenAIBody("job 2"), "flush-size", defer: "24h");
        Assert.Equal(HttpStatusCode.Accepted, s3);
        locations.Add(r3.Headers.Location!.ToString());
        foreach (var l in locations) Assert.Equal(HttpStatusCode.OK, (await DeferralGatewayTests.AwaitJob(gw.Http, key, l)).Status);
        Assert.Equal(before + 1, gw.Simulator.BatchIds.Count); // the third filled the queue: one batch of three
        var rows = await gw.RowsAsync(r => r.Feature == "flush-size", 3);
        Assert.Equal(3, rows.Count);
        Assert.Single(rows.Select(r => r.BatchId).Distinct());
        var jobs = await gw.Services.GetRequiredService<IJobStore>().ListJobsAsync(JobState.Done, 100, default);
        Assert.Equal(3, jobs.Count(j => j.Feature == "flush-size"));
    }

    [Fact]
    public async Task A_job_whose_delay_runs_out_before_its_batch_answers_fails_with_its_reason_and_one_row()
    {
        await using var gw = await BatchHost.StartAsync(_dir, "--Bursar:Deferral:FlushInterval=00:00:00.050", "--Bursar:Deferral:MaxWait=00:00:00.100",
            "--Bursar:Deferral:MinDelay=00:00:00", "--Bursar:Simulator:BatchProcessingTime=00:00:01");
        var key = await gw.KeyAsync();
        var (s, _, r) = await DeferralGatewayTests.Call(gw.Http, key, "/v1/chat/completions", DeferralGatewayTests.OpenAIBody("late [[sim:batch=expire]]"), "flush-late", defer: "0.5s");
        Assert.Equal(HttpStatusCode.Accepted, s);
        var (status, body) = await DeferralGatewayTests.AwaitJob(gw.Http, key, r.Headers.Location!.ToString());
        Assert.Equal(HttpStatusCode.GatewayTimeout, status);
        Assert.Contains("within its delay", JsonNode.Parse(body)!["error"]!["message"]!.GetValue<string>());
        var row = Assert.Single(await gw.RowsAsync(x => x.Feature == "flush-late", 1));
        Assert.Equal(("expired", 0m), (row.Outcome, row.Cost!.Value));
    }
}
