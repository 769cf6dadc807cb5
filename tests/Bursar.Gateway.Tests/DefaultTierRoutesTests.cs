using System.Net;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>LEVERS.md's task table as routes (Bursar:Routing:DefaultTierRoutes): each tagged task to its tier of the requested model's family.</summary>
public sealed class DefaultTierRoutesTests
{
    [Fact]
    public async Task Tagged_tasks_go_to_their_tier_of_the_requested_family_and_never_up()
    {
        var gw = new ConfiguredGateway(["--Bursar:Routing:DefaultTierRoutes=true"]);
        await gw.InitializeAsync();
        try
        {
            async Task Send(string task, string model, string path = "/v1/chat/completions")
            {
                var body = path.EndsWith("messages", StringComparison.Ordinal)
                    ? new JsonObject { ["model"] = model, ["max_tokens"] = 50, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Task " + task + " [[sim:tokens=5]]" }) }
                    : new JsonObject { ["model"] = model, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Task " + task + " [[sim:tokens=5]]" }) };
                using var req = gw.Post(path, body.ToJsonString(), feature: "tiers");
                req.Headers.Add("x-bursar-task", task);
                using var resp = await gw.Http.SendAsync(req);
                Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
            }
            await Send("classification", "gpt-4.1");
            await Send("code", "claude-opus-4-5", "/v1/messages");
            await Send("reasoning", "gpt-4.1-mini"); // the top tier is above gpt-4.1-mini: routing never moves a call up
            await Send("untagged-task", "gpt-4.1");
            var rows = (await gw.LedgerAsync("tiers", 4)).OrderBy(r => r.Timestamp).ToArray();
            Assert.StartsWith("gpt-4.1-nano", rows[0].ServedModel);
            Assert.Equal("tier:classification", rows[0].Route);
            Assert.Contains("small tier gpt-4.1-nano", rows[0].RoutingReason);
            Assert.True(rows[0].SavingRouting > 0);
            Assert.StartsWith("claude-sonnet-4-5", rows[1].ServedModel);
            Assert.StartsWith("gpt-4.1-mini", rows[2].ServedModel);
            Assert.Null(rows[2].RoutingReason);
            Assert.Null(rows[3].Route);
        }
        finally
        {
            await gw.DisposeAsync();
        }
    }

    [Fact]
    public void A_tier_route_is_validated()
    {
        var bad = new Bursar.Core.Routing.RoutingOptions { Routes = [new Bursar.Core.Routing.RoutePolicy { Name = "t", Tier = "tiny" }] };
        Assert.Contains("Tier 'tiny'", Assert.Throws<InvalidOperationException>(() => bad.Validate()).Message);
        var both = new Bursar.Core.Routing.RoutingOptions { Routes = [new Bursar.Core.Routing.RoutePolicy { Name = "t", Tier = "small", Model = "gpt-4.1-nano" }] };
        Assert.Contains("pick one", Assert.Throws<InvalidOperationException>(() => both.Validate()).Message);
        var withDefaults = new Bursar.Core.Routing.RoutingOptions { DefaultTierRoutes = true, Routes = [new Bursar.Core.Routing.RoutePolicy { Name = "mine", Task = "classification", Model = "gpt-4o-mini" }] }.WithDefaults();
        Assert.Equal("mine", withDefaults.Routes[0].Name); // configured routes come first and win
        Assert.Contains(withDefaults.Routes, r => r.Name == "tier:extraction" && r.Tier == "small");
    }
}
