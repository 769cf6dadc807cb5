using System.Net;
using Bursar.Gateway.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Bursar.Gateway.Tests;

/// <summary>A gateway whose socket transport runs each request on its I/O thread (Bursar:Server:InlineScheduling).</summary>
public sealed class InlineSchedulingFixture : GatewayFixture
{
    protected override IEnumerable<string> ExtraArgs => ["--Bursar:Server:InlineScheduling=true"];
}

public sealed class InlineSchedulingTests(InlineSchedulingFixture gw) : IClassFixture<InlineSchedulingFixture>
{
    [Fact]
    public async Task With_inline_scheduling_the_transport_is_set_so_and_JSON_and_streamed_calls_are_served_and_metered()
    {
        Assert.True(gw.Services.GetRequiredService<IOptions<SocketTransportOptions>>().Value.UnsafePreferInlineScheduling);
        using (var json = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Wie spät ist es in Tokio?"}],"max_tokens":20}""", feature: "inline-json")))
            Assert.Equal(HttpStatusCode.OK, json.StatusCode);
        using (var sse = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"東京は今何時ですか？"}],"max_tokens":20}""", feature: "inline-sse")))
        {
            Assert.Equal(HttpStatusCode.OK, sse.StatusCode);
            Assert.Contains("data: [DONE]", await sse.Content.ReadAsStringAsync());
        }
        Assert.True((await gw.LedgerAsync("inline-json")).Single().OutputTokens > 0);
        Assert.True((await gw.LedgerAsync("inline-sse")).Single().Streamed);
    }

    [Fact]
    public async Task By_default_requests_are_handed_to_the_thread_pool()
    {
        var dir = Path.Combine(Path.GetTempPath(), "bursar-inline-" + Guid.NewGuid().ToString("N"));
        await using (var app = GatewayHost.Build(["--urls=http://127.0.0.1:0", "--Bursar:DataDirectory=" + dir]))
            Assert.False(app.Services.GetRequiredService<IOptions<SocketTransportOptions>>().Value.UnsafePreferInlineScheduling);
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(dir, true); } catch (IOException) { }
    }
}
