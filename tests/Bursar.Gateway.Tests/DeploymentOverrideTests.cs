using Bursar.Providers.Dialects;
using Bursar.Providers.Upstream;
using Microsoft.Extensions.Configuration;

namespace Bursar.Gateway.Tests;

/// <summary>Overriding one field of a built-in deployment keeps the built-in values it does not name (issue 19, item 10).</summary>
public sealed class DeploymentOverrideTests
{
    private static ProvidersOptions Bind(params string[] args) =>
        ProvidersOptions.WithDefaults(new ConfigurationBuilder().AddCommandLine(args).Build().GetSection(ProvidersOptions.Section).Get<ProvidersOptions>());

    [Fact]
    public void Overriding_only_the_base_url_of_anthropic_keeps_its_dialect_and_models()
    {
        var o = Bind("--Bursar:Providers:Deployments:anthropic:BaseUrl=http://127.0.0.1:9/anthropic");
        var d = o.Deployments["anthropic"];
        Assert.Equal(Dialect.Anthropic, d.ParsedDialect);
        Assert.Equal(["claude-*"], d.Models);
        Assert.Equal("http://127.0.0.1:9/anthropic", d.BaseUrl);
        Assert.Equal(["gpt-*", "o1*", "o3*", "o4*", "chatgpt-*"], o.Deployments["openai"].Models); // the other built-in is untouched
    }

    [Fact]
    public void Overriding_only_the_models_of_anthropic_keeps_it_anthropic_dialect()
    {
        var d = Bind("--Bursar:Providers:Deployments:anthropic:Models:0=claude-sonnet-4-5").Deployments["anthropic"];
        Assert.Equal(Dialect.Anthropic, d.ParsedDialect);
        Assert.Equal(["claude-sonnet-4-5"], d.Models);
        Assert.Equal("https://api.anthropic.com", d.BaseUrl);
    }

    [Fact]
    public void Overriding_the_key_of_openai_keeps_its_models_and_base_url()
    {
        var d = Bind("--Bursar:Providers:Deployments:OpenAI:ApiKey=sk-test").Deployments["openai"];
        Assert.Equal(Dialect.OpenAI, d.ParsedDialect);
        Assert.Contains("gpt-*", d.Models);
        Assert.Equal("https://api.openai.com/v1", d.BaseUrl);
        Assert.Equal("sk-test", d.ApiKey);
    }

    [Fact]
    public void A_new_deployment_without_models_is_still_an_error_naming_the_setting()
    {
        var e = Assert.Throws<InvalidOperationException>(() => Bind("--Bursar:Providers:Deployments:local:BaseUrl=http://127.0.0.1:11434/v1"));
        Assert.Contains("Bursar:Providers:Deployments:local:Models", e.Message, StringComparison.Ordinal);
    }
}
