using System.ClientModel;
using System.ClientModel.Primitives;
using Bursar.Core.Batch;
using Bursar.Core.Ledger;
using Bursar.Extensions.AI;
using Bursar.Providers.Simulator;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using OpenAI;

namespace Bursar.Gateway.Tests;

/// <summary>
/// <c>ChatOptions.AllowBackgroundResponses</c> in the .NET library: the call is deferred by the same stage as the gateway's
/// <c>x-bursar-defer</c>, queued in the shared job store, sent in a provider batch by the gateway's flusher over the same
/// data directory, and polling with the <see cref="ResponseContinuationToken"/> returns its answer, billed once at the batch rate.
/// </summary>
[Collection("batch")]
public sealed class BackgroundResponsesTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-background-" + Guid.NewGuid().ToString("N"));
    private BatchHost _gw = null!;
    private ServiceProvider _library = null!;

    public async Task InitializeAsync()
    {
        _gw = await BatchHost.StartAsync(_dir, "--Bursar:Deferral:MaxWait=00:00:00.200", "--Bursar:Deferral:FlushInterval=00:00:00.050");
        _library = new ServiceCollection().AddBursar(new Dictionary<string, string?> { ["Bursar:DataDirectory"] = _dir,
            ["Bursar:Routing:Routes:0:Name"] = "nightly", ["Bursar:Routing:Routes:0:Task"] = "nightly", ["Bursar:Routing:Routes:0:Defer"] = "01:00:00" }).BuildServiceProvider();
    }

    public async Task DisposeAsync()
    {
        await _library.DisposeAsync();
        await _gw.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    /// <summary>The library face over the official OpenAI SDK pointed at the provider (the gateway's Simulator, in process).</summary>
    private IChatClient Client(string model)
    {
        var inner = new OpenAIClient(new ApiKeyCredential("sim"), new OpenAIClientOptions
        {
            Endpoint = new Uri("http://simulator.local/v1"), RetryPolicy = new ClientRetryPolicy(0),
            Transport = new HttpClientPipelineTransport(new HttpClient(new SimulatorHttpHandler(_gw.Simulator))),
        }).GetChatClient(model).AsIChatClient();
        return new ChatClientBuilder(inner).UseBursar(o => o.ProviderName = "openai (simulator)").Build(_library);
    }

    private static async Task<ChatResponse> PollAsync(IChatClient client, ResponseContinuationToken token)
    {
        for (var i = 0; i < 400; i++)
        {
            var r = await client.GetResponseAsync([], new ChatOptions { ContinuationToken = token });
            if (r.ContinuationToken is null) return r;
            Assert.Empty(r.Messages); // still waiting: no answer, the same token back
            await Task.Delay(25);
        }
        Assert.Fail("the deferred call never finished");
        return null!;
    }

    [Theory]
    [InlineData("gpt-4o-mini", 0.075, 0.30)]
    [InlineData("claude-haiku-4-5", 0.50, 2.50)]
    public async Task A_background_call_is_deferred_to_a_batch_and_polling_its_token_returns_the_answer_billed_once_at_the_batch_rate(string model, double inputRate, double outputRate)
    {
        var feature = "lib-background-" + model;
        var client = Client(model);
        var first = await client.GetResponseAsync("Summarise last night's tickets [[sim:tokens=60]]", new ChatOptions
        {
            ModelId = model, AllowBackgroundResponses = true, MaxOutputTokens = 200,
            AdditionalProperties = new AdditionalPropertiesDictionary { ["bursar.feature"] = feature, ["bursar.defer"] = "1h" },
        });
        Assert.NotNull(first.ContinuationToken);
        Assert.Empty(first.Messages);
        var job = Assert.IsType<string>(first.AdditionalProperties!["bursar.job"]);
        var queued = (await _gw.Services.GetRequiredService<IJobStore>().FindJobAsync(job, default))!;
        Assert.Equal((BursarChatClientOptions.InProcessKey.Id, model, feature), (queued.KeyId, queued.Model, queued.Feature));
        Assert.InRange(queued.Deadline - queued.CreatedAt, TimeSpan.FromMinutes(59), TimeSpan.FromMinutes(61)); // bursar.defer = 1h

        // the token is bytes: another process (or a restart) can poll with it
        var token = ResponseContinuationToken.FromBytes(first.ContinuationToken!.ToBytes());
        var answer = await PollAsync(client, token);
        Assert.False(string.IsNullOrWhiteSpace(answer.Text));
        Assert.InRange(answer.Usage!.OutputTokenCount!.Value, 60, 61);

        var rows = await _gw.RowsAsync(r => r.Feature == feature, 1);
        var row = Assert.Single(rows); // one row, the batch line's: the inner client never answered it synchronously
        Assert.Equal(("ok", true, BursarChatClientOptions.InProcessKey.Id, job), (row.Outcome, row.Batch, row.KeyId, row.CustomId));
        Assert.Equal((row.InputTokens * (decimal)inputRate + row.OutputTokens * (decimal)outputRate) / 1_000_000m, row.Cost);
        Assert.Equal(row.Cost, row.SavingBatch);
        // polling again answers the same and bills nothing more
        Assert.Equal(answer.Text, (await PollAsync(client, token)).Text);
        await Task.Delay(200);
        Assert.Single(await _gw.RowsAsync(r => r.Feature == feature, 2, waitMs: 200));
    }

    [Fact]
    public async Task A_call_without_AllowBackgroundResponses_or_a_streamed_one_runs_now()
    {
        var client = Client("gpt-4o-mini");
        var now = await client.GetResponseAsync("hi", new ChatOptions { ModelId = "gpt-4o-mini", AdditionalProperties = new AdditionalPropertiesDictionary { ["bursar.feature"] = "lib-sync" } });
        Assert.Null(now.ContinuationToken);
        Assert.False(string.IsNullOrWhiteSpace(now.Text));
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync("hi", new ChatOptions { ModelId = "gpt-4o-mini", AllowBackgroundResponses = true })) updates.Add(u);
        Assert.False(string.IsNullOrWhiteSpace(updates.ToChatResponse().Text));
        Assert.Empty(await _gw.Services.GetRequiredService<IJobStore>().ListJobsAsync(null, 100, default));
    }

    [Fact]
    public async Task A_routes_Defer_waits_only_for_a_caller_that_allowed_background_responses()
    {
        var client = Client("gpt-4o-mini");
        ChatOptions Options(bool background) => new()
        {
            ModelId = "gpt-4o-mini", AllowBackgroundResponses = background,
            AdditionalProperties = new AdditionalPropertiesDictionary { ["bursar.task"] = "nightly", ["bursar.feature"] = "lib-route-defer" },
        };
        var now = await client.GetResponseAsync("tonight's report", Options(background: false));
        Assert.Null(now.ContinuationToken); // the caller expects an answer: the route's Defer does not apply
        Assert.False(string.IsNullOrWhiteSpace(now.Text));
        var later = await client.GetResponseAsync("tonight's report", Options(background: true));
        Assert.NotNull(later.ContinuationToken);
        Assert.False(string.IsNullOrWhiteSpace((await PollAsync(client, later.ContinuationToken!)).Text));
    }

    [Fact]
    public async Task A_token_for_a_job_the_store_does_not_hold_is_refused_naming_it()
    {
        var client = Client("gpt-4o-mini");
        var e = await Assert.ThrowsAsync<BursarRefusedException>(() => client.GetResponseAsync([], new ChatOptions { ContinuationToken = ResponseContinuationToken.FromBytes("bursar-job:job_nope"u8.ToArray()) }));
        Assert.Contains("job_nope", e.Message);
        Assert.Equal(404, e.Refusal.Status);
    }
}
